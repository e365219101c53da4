"""`gramc doctor`: checks that measure what is wrong with a run (see docs/doctor.md).

flow (one real batch: the trainer's step-0 audit, history order), gradsync (1 vs N processes
through the real Trainer), recipe (config vs a reference recipe), leakage (GCN, split, inputs),
evalchecks (ID collisions, beams, trie, sharding, metrics); `data` and `ids` reuse
gramc.graph.checks and gramc.ids. Every check function returns list[gramc.checks.Check].
"""
