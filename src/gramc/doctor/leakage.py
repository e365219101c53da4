"""`gramc doctor leakage`: nothing the model reads saw the interactions it is evaluated on.

* `leakage.gcn_*` (reused from `gramc.graph.checks.leakage_checks`): the GCN table and its
  similar-item lists were trained on training interactions only; the fingerprint of the
  training pairs is recomputed from the dataset and compared with `gcn_meta.json`.
* `leakage.gcn_config`: the config itself asks for a leaky table (`gcn.interactions` != train).
* `leakage.similar_source`, `leakage.ids_source`: similar items read from a foreign file, or IDs
  clustered from a foreign embedding file, have unknown provenance (warnings).
* `leakage.split`: training samples use only s[:-2], validation s[:-2] -> s[-2], test
  s[:-1] -> s[-1], so no validation/test target is in its own history by construction.
* `leakage.inputs`: on the real collator output for a slice of train/valid/test samples, every
  item the model reads for a sample (user-passage IDs, item-passage rows, `recent_item_ids`) is
  an item of that sample's history; the target appears only when the user really had it before
  (repeat consumption, reported), never because the input was built from the future.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..checks import Check, check, passed, warned
from ..config import Config
from ..data.dataset import SeqDataset
from ..data.splits import MIN_LEN, Sample, samples
from ..graph.artifacts import GcnArtifacts
from ..graph import checks as graph_checks
from ..model.inputs import Collator
from .flow import history_rows, user_passage_items


def gcn_leakage_checks(ds: SeqDataset, gcn_dir: str | Path, cfg: Config | None = None) -> list[Check]:
    """The GCN folder's leakage checks (reused from gramc.graph.checks) plus the config's own setting."""
    out: list[Check] = []
    if cfg is not None:
        out.append(check("leakage.gcn_config", cfg.gcn.interactions == "train", {"gcn.interactions": cfg.gcn.interactions},
                         f"gcn.interactions={cfg.gcn.interactions} trains the GCN table on validation/test "
                         f"interactions: every model reading it is evaluated on what it saw. Use gcn.interactions=train"))
    art = GcnArtifacts.load(gcn_dir)
    for c in graph_checks.leakage_checks(ds, art):
        c.name = c.name.replace("gcn.leakage.", "leakage.gcn_")
        out.append(c)
    return out


def similar_source_check(cfg: Config) -> Check:
    src = cfg.model.similar_source
    if cfg.model.similar_items == 0:
        return passed("leakage.similar_source", "none", "no similar items in the passages")
    if src == "gcn":
        return passed("leakage.similar_source", "gcn", "computed from the GCN table (see leakage.gcn_*)")
    return warned("leakage.similar_source", src,
                  f"similar items come from {src}, whose training data gramc cannot verify (GRAM's "
                  f"similar_item_sasrec.txt came from a SASRec run); make sure it was trained on training "
                  f"interactions only, or use model.similar_source=gcn")


def ids_source_check(cfg: Config) -> Check:
    """Item IDs built by gramc come from item text only; a user-supplied embedding may not."""
    if cfg.ids.file:
        return passed("leakage.ids_source", "file", f"IDs read from {cfg.ids.file} (GRAM's are built from item text)")
    if cfg.ids.embedding == "npy":
        return warned("leakage.ids_source", cfg.ids.embedding_file,
                      f"the IDs are clustered from {cfg.ids.embedding_file or 'an .npy file'}, whose training data "
                      f"gramc cannot verify: if it was trained on interactions, they must be training "
                      f"interactions only; or use ids.embedding=tfidf|minilm (item text only)")
    return passed("leakage.ids_source", cfg.ids.embedding, "built from item text only")


def split_check(ds: SeqDataset, max_his: int,
                split_samples: Callable[[SeqDataset, str, int], list[Sample]] = samples) -> Check:
    """Samples of every split come from the right positions of each sequence (s = oldest first):
    training targets s[1..n-3] with the items right before them, validation s[:-2] -> s[-2], test
    s[:-1] -> s[-1]. So no validation/test target is ever in its own history by construction."""
    bad: list[str] = []
    train: dict[int, list[Sample]] = {}
    for s in split_samples(ds, "train", max_his):
        train.setdefault(s.user, []).append(s)
    valid = {s.user: s for s in split_samples(ds, "valid", max_his)}
    test = {s.user: s for s in split_samples(ds, "test", max_his)}
    n_train = 0
    for u, seq in enumerate(ds.sequences):
        if len(seq) < MIN_LEN:
            continue
        cut = seq[:-2]
        mine = train.get(u, [])
        n_train += len(mine)
        ok = len(mine) == len(cut) - 1 and all(
            s.target == cut[j + 1] and s.history == tuple(cut[: j + 1][-max_his:]) for j, s in enumerate(mine))
        if not ok:
            bad.append(f"user {ds.users[u]}: training samples are not s[:j] -> s[j] within s[:-2]")
        v, t = valid.get(u), test.get(u)
        if v is None or v.target != seq[-2] or v.history != tuple(seq[:-2][-max_his:]):
            bad.append(f"user {ds.users[u]}: the validation sample is not s[:-2] -> s[-2]")
        if t is None or t.target != seq[-1] or t.history != tuple(seq[:-1][-max_his:]):
            bad.append(f"user {ds.users[u]}: the test sample is not s[:-1] -> s[-1]")
        if len(bad) >= 5:
            break
    return check("leakage.split", not bad, {"users": len(valid), "train_samples": n_train},
                 "the splits leak or misplace targets: " + "; ".join(bad[:5]) + ". Build samples with "
                 "gramc.data.splits.samples")


def _inputs_of(batch: Any, r: int, cache: Any, item_ids: Any) -> dict[str, list[int]]:
    """Dataset items the model reads for sample r of a batch (-1 = an ID of no item), per input."""
    user = user_passage_items(batch.user_input[r][batch.user_mask[r]].tolist(), cache, item_ids)
    return {"user_passage": user, "item_passages": history_rows(batch, r)}


def input_leakage_check(cfg: Config, cache: Any, item_ids: Any, gcn_rows: torch.Tensor | None,
                        ds: SeqDataset, per_split: int = 64,
                        collate: Callable[[Sequence[Sample]], Any] | None = None) -> Check:
    """On the real collator's output, the inputs of each sample are items of its own history."""
    collate = collate or Collator(cache, cfg, gcn_rows=gcn_rows)
    row_to_item: dict[int, int] = {}
    if gcn_rows is not None:
        row_to_item = {int(g): i for i, g in enumerate(gcn_rows.tolist()) if g > 0}
    foreign: list[str] = []
    leaks = 0
    repeats = 0
    checked = 0
    for split in ("train", "valid", "test"):
        smp = samples(ds, split, cfg.data.max_his)
        step = max(1, len(smp) // per_split)
        chunk = smp[::step][:per_split]
        if not chunk:
            continue
        batch = collate(chunk)
        for r, s in enumerate(chunk):
            checked += 1
            hist = set(s.history[-cfg.data.max_his:])
            seen = _inputs_of(batch, r, cache, item_ids)
            if gcn_rows is not None and batch.prefix_enabled:
                seen["recent_item_ids"] = [row_to_item.get(int(g), -1) for g in batch.recent_item_ids[r].tolist() if g > 0]
            repeats += s.target in hist
            for where, items in seen.items():
                extra = [i for i in items if i not in hist]
                if extra:
                    leaks += s.target in extra
                    if len(foreign) < 3:
                        what = ("the target " if s.target in extra else "") + ", ".join(
                            ds.item_ids[i] if i >= 0 else "an unknown ID" for i in extra[:3])
                        foreign.append(f"{split} sample of user {ds.users[s.user]}: {where} holds {what}, "
                                       f"not in its history")
    value = {"samples": checked, "target_leaks": leaks, "repeat_targets": repeats}
    return check("leakage.inputs", not foreign, value,
                 "the model reads items outside the sample's history (" + "; ".join(foreign) + "); the "
                 "collator must build every input from Sample.history only",
                 f"{repeats} targets were genuinely in the user's history (repeat consumption)" if repeats else "")


def leakage_checks(cfg: Config, assets: Any, gcn_dir: str | Path | None) -> list[Check]:
    """Everything above for a config and its assets."""
    out: list[Check] = []
    if gcn_dir is not None and Path(gcn_dir).is_dir():
        out += gcn_leakage_checks(assets.ds, gcn_dir, cfg)
    out.append(similar_source_check(cfg))
    out.append(ids_source_check(cfg))
    out.append(split_check(assets.ds, cfg.data.max_his))
    out.append(input_leakage_check(cfg, assets.cache, assets.item_ids, assets.gcn_rows, assets.ds))
    return out
