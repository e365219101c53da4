"""The item-ID prefix tree now lives in `gramc.ids.trie` (the model's trie softmax needs it upstream
of evaluation); this module keeps `from gramc.eval.trie import Trie, trie_for` working."""

from ..ids.trie import EOS_ID, Trie, targets_fingerprint, trie_for

__all__ = ["EOS_ID", "Trie", "targets_fingerprint", "trie_for"]
