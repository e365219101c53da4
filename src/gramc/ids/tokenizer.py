"""Tokenizers for item IDs and passages: load a T5-style vocabulary or train one on item texts.

`Tokenizer` wraps a Hugging Face fast tokenizer (`tokenizers.Tokenizer`, the backend of
`transformers.T5TokenizerFast`). gramc relies on T5's special ids: pad=0, eos=1 (`</s>`),
unk=2; a vocabulary that does not put them there is rejected with a clear error.

* `load_tokenizer(spec)`: a local folder (`tokenizer.json` is read directly; a folder with only
  `spiece.model`, or a hub name, goes through `transformers.AutoTokenizer`).
* `train_tokenizer(texts, vocab_size, out_dir)`: a SentencePiece-style unigram model (Unigram +
  Metaspace) trained on the dataset's item texts, for models trained from scratch.
* `resolve_tokenizer(spec, folder, texts, vocab_size, reuse)`: the one "train or load" rule of
  `ids.tokenizer` (model assets, `gramc ids build`, the pipeline's ids stage).

`Tokenizer.fingerprint` (sha256 of the serialized model, normalizer and pre-tokenizer) is
recorded with every ID artefact so that IDs and checkpoints can be matched to their vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

from ..data.dataset import DataError
from ..io import atomic_dir, write_json, write_text
from .tokens import EOS_ID, PAD_ID, UNK_ID

SPECIAL_PIECES = ("<pad>", "</s>", "<unk>")


class TokenizerError(DataError):
    """A tokenizer cannot be loaded or does not follow T5's special-token layout."""


class Tokenizer:
    """A fast (Rust) tokenizer with T5's special ids, looked up by piece, never by hard-coded id."""

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __init__(self, backend, source: str = "") -> None:
        """`backend` is a `tokenizers.Tokenizer`; `source` says where it came from (for messages)."""
        self.backend = backend
        self.source = source
        for i, piece in enumerate(SPECIAL_PIECES):
            got = backend.id_to_token(i)
            if got != piece:
                raise TokenizerError(
                    f"tokenizer {source or '(in memory)'}: id {i} is {got!r}, expected {piece!r} "
                    f"(gramc needs T5's layout pad=0, eos=1, unk=2)")
        self._fingerprint: str | None = None
        self._special: set[int] | None = None

    # ---- lookups -----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, including added special tokens (e.g. T5's 100 `<extra_id_N>`)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def piece_to_id(self, piece: str) -> int | None:
        """Id of a vocabulary piece (exact string, e.g. '▁loss' or 'ren'); None if not a piece."""
        return self.backend.token_to_id(piece)

    def id_to_piece(self, i: int) -> str:
        piece = self.backend.id_to_token(int(i))
        if piece is None:
            raise IndexError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return piece

    def is_special(self, i: int) -> bool:
        """True for pad/eos/unk and added special tokens such as `<extra_id_0>`."""
        if self._special is None:
            self._special = {PAD_ID, EOS_ID, UNK_ID} | {
                j for j, t in self.backend.get_added_tokens_decoder().items() if t.special}
        return int(i) in self._special

    # ---- text <-> ids ------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without the trailing `</s>`."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once (parallel in Rust)."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def separator_ids(self) -> set[int]:
        """Ids of the pieces `|` and `▁|` (those present): GRAM drops them from every passage."""
        return {i for i in (self.piece_to_id("|"), self.piece_to_id("▁|")) if i is not None}

    def glue(self, token: int, mark: str) -> list[int]:
        """Tokens of piece `token` with `mark` written right after it, inside the same word (no `▁`
        between them): GRAM's `...|▁profound;` gives `▁profound`, `;`, where `encode(";")` would give
        `▁`, `;`. The model segments the joined text directly, as it does for that part of the word."""
        return [t.id for t in self.backend.model.tokenize(self.id_to_piece(token) + mark)]

    def tokenize(self, text: str) -> list[str]:
        """Pieces of `text` (no `</s>`)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def decode_batch(self, seqs: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        return self.backend.decode_batch([[int(i) for i in s] for s in seqs],
                                         skip_special_tokens=skip_special)

    # ---- identity and persistence --------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the serialized vocabulary/model (unigram scores rounded to 6 decimals),
        normalizer, pre-tokenizer and added tokens."""
        if self._fingerprint is None:
            tree = json.loads(self.backend.to_str())
            keep = {k: tree.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer", "model")}
            vocab = (keep["model"] or {}).get("vocab")
            if isinstance(vocab, list):  # unigram scores: the trainer's float sums and the JSON
                # round trip differ in the last bits from run to run; 6 decimals identify the model
                keep["model"] = {**keep["model"], "vocab": [[p, round(float(v), 6)] for p, v in vocab]}
            blob = json.dumps(keep, sort_keys=True, ensure_ascii=False).encode("utf-8")
            self._fingerprint = hashlib.sha256(blob).hexdigest()
        return self._fingerprint

    def save(self, folder: str | Path) -> Path:
        """Write `tokenizer.json` + `tokenizer_config.json` (loadable by `load_tokenizer` and by
        `transformers.AutoTokenizer`) into `folder`; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "tokenizer.json", self.backend.to_str(pretty=True))
        write_json(folder / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
            "model_max_length": 512, "gramc_fingerprint": self.fingerprint,
        })
        return folder

    def piece_table(self) -> list[str | None]:
        """The piece of every id 0..vocab_size-1 (what a model's embedding rows stand for)."""
        return [self.backend.id_to_token(i) for i in range(self.vocab_size)]

    @property
    def vocabulary_sha256(self) -> str:
        """sha256 of the piece table alone (one piece per line, id order): equal for every copy of a
        vocabulary whatever its normalizer settings, e.g. T5's `bde168f5...` (32,100 ids)."""
        return hashlib.sha256("\n".join(p or "" for p in self.piece_table()).encode("utf-8")).hexdigest()

    def describe(self) -> dict:
        """Provenance record: where it came from, its size and fingerprint."""
        return {"source": self.source, "vocab_size": self.vocab_size, "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """Load a tokenizer from a local folder (or a `tokenizer.json` file) or a hub name.

    A folder with `tokenizer.json` is read directly by the `tokenizers` library (fast, no
    transformers import); otherwise `transformers.AutoTokenizer` converts it (e.g. a folder with
    only `spiece.model`, or a hub name such as `t5-small`, which needs network on first use).
    """
    from tokenizers import Tokenizer as Backend

    spec_s = str(spec)
    if not spec_s:
        raise TokenizerError("no tokenizer given (expected a folder, a tokenizer.json or a hub name)")
    p = Path(spec_s)
    if p.is_file() and p.name.endswith(".json"):
        return Tokenizer(Backend.from_file(str(p)), source=str(p))
    if p.is_dir() and (p / "tokenizer.json").is_file():
        try:
            backend = Backend.from_file(str(p / "tokenizer.json"))
        except Exception as e:  # the Rust loader raises a bare Exception
            raise TokenizerError(f"{p / 'tokenizer.json'}: not a valid tokenizers file ({e})") from e
        return Tokenizer(backend, source=str(p))
    looks_local = p.exists() or spec_s.startswith((".", "/", "~")) or spec_s.count("/") > 1
    if looks_local and not p.is_dir():
        raise TokenizerError(f"tokenizer folder '{p}' does not exist")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(spec_s)
    except Exception as e:  # network, missing files, unknown model: all unusable arguments
        hint = ""
        if p.is_dir() and (p / "spiece.model").is_file():
            hint = (" -- converting a bare spiece.model needs the protobuf package (pip install protobuf); "
                    "or save the tokenizer once as tokenizer.json where it can be converted")
        raise TokenizerError(f"cannot load tokenizer '{spec_s}' ({type(e).__name__}: {str(e)[:300]}); expected "
                             f"a folder with tokenizer.json or spiece.model, or a hub name{hint}") from e
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"tokenizer '{spec_s}' has no fast (Rust) backend; gramc needs one")
    return Tokenizer(backend, source=spec_s)


def resolve_tokenizer(spec: str | Path, folder: str | Path, texts: Sequence[str] = (), vocab_size: int = 0,
                      reuse: bool = True) -> Tokenizer:
    """`ids.tokenizer` -> Tokenizer. A folder, tokenizer.json or hub name is loaded as it is;
    "train" means the tokenizer kept in `folder`: loaded when `reuse` and it holds one, else
    trained on `texts` with `vocab_size` pieces and written there atomically."""
    if str(spec) != "train":
        return load_tokenizer(spec)
    folder = Path(folder)
    if not (reuse and (folder / "tokenizer.json").is_file()):
        with atomic_dir(folder) as tmp:
            train_tokenizer(texts, vocab_size, out_dir=tmp)
    return load_tokenizer(folder)


def vocabulary_mismatch(a: Tokenizer, b: Tokenizer) -> str:
    """"" when `a` and `b` map every id to the same piece, else what differs (sizes, first ids)."""
    pa, pb = a.piece_table(), b.piece_table()
    if pa == pb:
        return ""
    diff = [i for i in range(min(len(pa), len(pb))) if pa[i] != pb[i]]
    shown = ", ".join(f"id {i}: {pa[i]!r} vs {pb[i]!r}" for i in diff[:3])
    return (f"{len(pa)} vs {len(pb)} ids, {len(diff)} of the shared ids name other pieces"
            + (f" ({shown})" if shown else "") + f"; fingerprints {a.fingerprint[:12]} vs {b.fingerprint[:12]}")


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None) -> Tokenizer:
    """Train a SentencePiece unigram tokenizer on `texts` (pad=0, eos=1, unk=2 like T5).

    The pieces and scores come from Google's `sentencepiece` trainer (single-threaded, so the same
    texts always give the same vocabulary: the `tokenizers` UnigramTrainer orders tied pieces
    differently from run to run). They are loaded into a fast `tokenizers` Unigram model with
    NFKC normalisation, whitespace runs collapsed, Metaspace (`▁`) pre-tokenisation and decoding,
    and `</s>` appended by the post-processor (not by `Tokenizer.encode`). `vocab_size` is an
    upper bound (small corpora give fewer pieces). Saved to `out_dir` when given, so that
    `load_tokenizer(out_dir)` reloads the identical tokenizer.
    """
    import io
    import unicodedata

    import sentencepiece as spm
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as Backend

    if vocab_size < 8:
        raise TokenizerError(f"vocab_size must be >= 8 to hold the special tokens, got {vocab_size}")
    # the same normalisation the tokenizer applies at encode time
    texts = [" ".join(unicodedata.normalize("NFKC", t).split()) for t in texts if t]
    texts = [t for t in texts if t]
    if not texts:
        raise TokenizerError("cannot train a tokenizer on no text")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", normalization_rule_name="identity",
        character_coverage=1.0, num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(sp.id_to_piece(i), 0.0 if i < len(SPECIAL_PIECES) else float(sp.get_score(i)))
             for i in range(sp.get_piece_size())]
    # digits are always pieces (de-duplication levels `0`, `1`, ... must be single pieces); added
    # ones get the lowest score, so they only replace what would otherwise be <unk>
    have = {p for p, _ in vocab}
    floor = min(v for _, v in vocab[len(SPECIAL_PIECES):]) - 1.0 if len(vocab) > len(SPECIAL_PIECES) else -10.0
    vocab += [(d, floor) for d in "0123456789" if d not in have]
    backend = Backend(models.Unigram(vocab, unk_id=UNK_ID))
    backend.add_special_tokens(list(SPECIAL_PIECES))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Strip()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", EOS_ID)])
    tok = Tokenizer(backend, source=f"trained(vocab_size={vocab_size}, texts={len(texts)})")
    if out_dir is not None:
        tok.save(out_dir)
        tok.source = str(out_dir)
    return tok
