"""The token ids every stage agrees on: T5's special ids and the label index losses ignore.

One definition, below the model: the tokenizer checks a vocabulary against them, the trie ends
every item ID with `EOS_ID`, the collator pads labels with `IGNORE_INDEX` and every loss, token
count and trie walk skips it. `IGNORE_INDEX` is PyTorch's (and Hugging Face's) default
`ignore_index`, so labels stay interchangeable with theirs.
"""

from __future__ import annotations

PAD_ID = 0  # padding, also T5's decoder start token
EOS_ID = 1  # `</s>`: ends every passage and every item ID
UNK_ID = 2
IGNORE_INDEX = -100  # label padding: no loss, not a target token

__all__ = ["PAD_ID", "EOS_ID", "UNK_ID", "IGNORE_INDEX"]
