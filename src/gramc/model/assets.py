"""Everything a GRAM-C model needs besides its weights, resolved once from the Config.

`Assets.from_config(cfg)` loads the dataset and item texts, then reuses or builds, in order:

    tokenizer   ids.tokenizer (folder / hub name), or "train": <run.out>/tokenizer
    item IDs    ids.file (a GRAM ID file), or built into <run.out>/ids.txt
    GCN         gcn.out, or trained into <run.out>/gcn   (only when the prefix is enabled or
                similar items come from the GCN)
    similar     the GCN's similar_items.txt, or the GRAM file named by model.similar_source
    passages    PassageCache, saved as <run.out>/passage_cache.pt (keyed by its fingerprint)

`build=False` (every loader of an existing run: `gramc evaluate`, `gramc recommend`, the doctor on
a trained run folder) only loads: a missing tokenizer, ID table, GCN table or similar-items file is
a `MissingAssetError` naming the file and the command that builds it, never a silent rebuild (a
rebuilt asset need not be the one the checkpoints were trained with). The passage cache, derived
from the assets above and checked by its fingerprint, is rebuilt when absent.

Artefacts built into run.out carry a stamp (`<artefact>.assets.json`: what they were built
from); a stamp that does not match the current data/config is an error rather than a silent
rebuild, because checkpoints in that folder were trained with the old artefacts.
In DDP, call it on rank 0 first (building), then on the other ranks after a barrier (reusing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..data.dataset import DataError, SeqDataset
from ..errors import MissingAssetError
from ..io import read_json, sha256_text, write_json
from .inputs import PassageCache

# The builders (tokenizer training, ID building, LightGCN training) and the readers of each asset
# are imported inside the functions that use them, for start-up time: loading a run whose assets
# all exist never imports the training code of the earlier stages.

STAMP_SUFFIX = ".assets.json"


def _stamp_path(artefact: Path) -> Path:
    return artefact.with_name(artefact.name + STAMP_SUFFIX)


def _check_stamp(artefact: Path, stamp: dict, what: str) -> None:
    """Raise when `artefact` was built from something else than `stamp` says (absent stamp: accept)."""
    p = _stamp_path(artefact)
    if not p.is_file():
        return
    old = read_json(p)
    if old != stamp:
        diff = sorted(k for k in set(old) | set(stamp) if old.get(k) != stamp.get(k))
        raise DataError(f"{artefact}: this {what} was built from different inputs (differs in {diff}); the "
                        f"checkpoints in {artefact.parent} were trained with it. Use the inputs it was built "
                        f"from, or train on the new ones in a fresh run.out (`gramc train --overwrite` moves "
                        f"the old run aside)")


def data_fingerprint(ds: SeqDataset) -> str:
    return ds.fingerprint()


def ids_fingerprint(item_ids) -> str:
    """sha256 of every item's ID pieces, in dataset order."""
    return sha256_text("\n".join(f"{a} {'|'.join(p)}" for a, p in zip(item_ids.item_ids, item_ids.pieces)))


def gcn_fingerprint(gcn) -> str:
    """sha256 of the GCN table and its item -> row mapping (what the prefix reads)."""
    import hashlib

    h = hashlib.sha256(gcn.embeddings.detach().float().contiguous().cpu().numpy().tobytes())
    h.update(json.dumps(gcn.mapping, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass
class Assets:
    """Dataset, texts, tokenizer, item IDs, GCN artefacts, similar items, GCN rows, passage cache."""

    ds: SeqDataset
    texts: list[str]
    tokenizer: object  # gramc.ids.tokenizer.Tokenizer
    item_ids: object  # gramc.ids.itemids.ItemIds
    gcn: object | None  # gramc.graph.artifacts.GcnArtifacts
    similar: list[list[int]] | None
    gcn_rows: torch.Tensor | None  # [num_items] GCN row per dataset index (0 = none); None without prefix
    cache: PassageCache
    inputs: dict[str, Path] = field(default_factory=dict)  # files used, for write_run_info

    def fingerprints(self) -> dict[str, dict[str, str]]:
        """What a checkpoint trained on these assets records (`assets.json`): per asset its
        fingerprint and where it came from. `gramc.checkpoint.verify_assets` compares them."""
        where = {k: str(Path(v).resolve()) for k, v in self.inputs.items()}
        rec = {
            "dataset": (data_fingerprint(self.ds), where.get("dataset", "synthetic data (data.path empty)")),
            "tokenizer": (self.tokenizer.fingerprint, where.get("tokenizer", str(getattr(self.tokenizer, "source", "")))),
            "ids": (ids_fingerprint(self.item_ids), where.get("ids", str(getattr(self.item_ids, "source", "")))),
            "passage_cache": (self.cache.fingerprint, "passage_cache.pt (rebuilt from the assets above)"),
        }
        if self.gcn is not None:
            rec["gcn"] = (gcn_fingerprint(self.gcn), str(Path(self.gcn.folder).resolve()))
        return {k: {"fingerprint": fp, "source": src} for k, (fp, src) in rec.items()}

    @classmethod
    def from_config(cls, cfg: Config, progress: bool = True, build: bool = True) -> "Assets":
        """The assets `cfg` names; `build`: train/build the missing ones into run.out (training, the
        pipeline) or raise `MissingAssetError` (loading an existing run)."""
        from ..data.source import load_dataset
        from ..data.text import item_texts

        out = Path(cfg.run.out)
        inputs: dict[str, Path] = {}
        if cfg.data.path:
            inputs["dataset"] = Path(cfg.data.path)
        ds = load_dataset(cfg.data)
        texts = item_texts(ds, cfg.data)
        data_fp = data_fingerprint(ds)

        tok = _tokenizer(cfg, texts, out, inputs, build)
        item_ids = _item_ids(cfg, ds, texts, tok, data_fp, out, inputs, progress, build)
        gcn, gcn_dir = _gcn(cfg, ds, out, inputs, progress, build)

        similar = None
        if cfg.model.similar_items > 0:
            from ..graph.similar import read_similar_items

            if cfg.model.similar_source == "gcn":
                path = gcn_dir / "similar_items.txt"
                if not build and not path.is_file():
                    raise missing_asset(path, "similar items (model.similar_source=gcn)",
                                        f"gramc gcn train --config {out / 'config.yaml'} --out {gcn_dir}")
            else:
                path = Path(cfg.model.similar_source)
                inputs["similar"] = path
            similar = read_similar_items(path, ds, cfg.model.similar_items)

        gcn_rows = None
        if cfg.model.prefix.enabled:
            gcn_rows = gcn.rows_for(ds).long()
            if int((gcn_rows > 0).sum()) == 0:
                raise DataError(f"{gcn_dir}: the GCN mapping covers none of the dataset's items; "
                                "was it trained on another dataset?")

        cache = PassageCache.load_or_build(out / "passage_cache.pt", tok, item_ids, texts, similar, cfg.model,
                                           progress=progress)
        return cls(ds=ds, texts=texts, tokenizer=tok, item_ids=item_ids, gcn=gcn, similar=similar,
                   gcn_rows=gcn_rows, cache=cache, inputs=inputs)


def missing_asset(path: Path, what: str, command: str) -> MissingAssetError:
    """The error of a run whose `what` at `path` is missing: loading a run never rebuilds it."""
    return MissingAssetError(f"{path} is missing: the {what} of this run. A loaded run never rebuilds its assets "
                             f"(a rebuilt one need not be the one its checkpoints were trained with): restore it, "
                             f"or build it with `{command}` (a checkpoint refuses assets other than its own)")


def _tokenizer(cfg: Config, texts: list[str], out: Path, inputs: dict[str, Path], build: bool = True):
    from ..ids.tokenizer import resolve_tokenizer

    if cfg.ids.tokenizer != "train":
        tok = resolve_tokenizer(cfg.ids.tokenizer, out / "tokenizer")
        if Path(cfg.ids.tokenizer).exists():
            inputs["tokenizer"] = Path(cfg.ids.tokenizer)
        if cfg.model.preset == "pretrained":
            check_pretrained_vocabulary(cfg, tok)
        return tok
    tok_dir = out / "tokenizer"
    stamp = {"texts_sha256": sha256_text("\n".join(texts)), "vocab_size": cfg.ids.vocab_size}
    if (tok_dir / "tokenizer.json").is_file():
        _check_stamp(tok_dir, stamp, "tokenizer")
        return resolve_tokenizer("train", tok_dir)
    if not build:
        raise missing_asset(tok_dir / "tokenizer.json", "tokenizer (ids.tokenizer=train)",
                            f"gramc train --config {out / 'config.yaml'} run.out=NEW_RUN")
    tok = resolve_tokenizer("train", tok_dir, texts, cfg.ids.vocab_size, reuse=False)
    write_json(_stamp_path(tok_dir), stamp)
    return tok


def check_pretrained_vocabulary(cfg: Config, tok) -> None:
    """Pretrained weights only with their own vocabulary: `tok` must have the piece table of the
    tokenizer saved with `model.pretrained` (token ids index the checkpoint's embedding rows)."""
    from ..ids.tokenizer import TokenizerError, load_tokenizer, vocabulary_mismatch

    if cfg.ids.tokenizer == cfg.model.pretrained:
        return
    try:
        own = load_tokenizer(cfg.model.pretrained)
    except TokenizerError as e:
        raise DataError(f"model.pretrained={cfg.model.pretrained!r}: cannot load the checkpoint's own tokenizer to "
                        f"compare it with ids.tokenizer={cfg.ids.tokenizer!r} ({e}); save the tokenizer next to "
                        f"the weights, or leave ids.tokenizer at 'train' to use the checkpoint's") from e
    diff = vocabulary_mismatch(tok, own)
    if diff:
        raise DataError(f"ids.tokenizer={cfg.ids.tokenizer!r} is not the vocabulary of model.pretrained="
                        f"{cfg.model.pretrained!r} ({diff}): its token ids would index unrelated embeddings of "
                        f"the pretrained model; use the checkpoint's own tokenizer (leave ids.tokenizer at 'train')")


def _item_ids(cfg: Config, ds: SeqDataset, texts: list[str], tok, data_fp: str, out: Path,
              inputs: dict[str, Path], progress: bool, build: bool = True):
    from ..config import to_dict
    from ..ids.itemids import load_gram_ids

    if cfg.ids.file:
        inputs["ids"] = Path(cfg.ids.file)
        return load_gram_ids(cfg.ids.file, ds, tok)
    path = out / "ids.txt"
    ids_cfg = {k: v for k, v in to_dict(cfg.ids).items() if k not in ("file", "tokenizer", "threads")}
    stamp = {"data": data_fp, "texts_sha256": sha256_text("\n".join(texts)), "tokenizer": tok.fingerprint,
             "ids": json.loads(json.dumps(ids_cfg))}
    if path.is_file():
        _check_stamp(path, stamp, "item-ID file")
        return load_gram_ids(path, ds, tok)
    if not build:
        raise missing_asset(path, "item-ID table (ids.file empty: built into run.out)",
                            f"gramc ids build --config {out / 'config.yaml'} --out {path}")
    from ..ids.build import build_ids, save_built_ids

    ids = build_ids(ds, texts, tok, cfg.ids, progress=progress)
    save_built_ids(ids, ds, tok, cfg, path, dict(inputs))
    write_json(_stamp_path(path), stamp)
    return ids


def _gcn(cfg: Config, ds: SeqDataset, out: Path, inputs: dict[str, Path], progress: bool, build: bool = True):
    from ..graph.artifacts import META_FILE, GcnArtifacts, gcn_folder, gcn_needed

    gcn_dir = gcn_folder(cfg, out)
    if not gcn_needed(cfg):
        return None, gcn_dir

    if not (gcn_dir / META_FILE).is_file():
        if cfg.gcn.out and gcn_dir.is_dir() and any(gcn_dir.iterdir()):
            # a user-brought table without meta: load what is there (GcnArtifacts names what is missing)
            inputs["gcn"] = gcn_dir
            return GcnArtifacts.load(gcn_dir), gcn_dir
        if not build:
            raise missing_asset(gcn_dir / META_FILE, "GCN table (the prefix or similar items read it)",
                                f"gramc gcn train --config {out / 'config.yaml'} --out {gcn_dir}")
        from ..graph.lightgcn import train_lightgcn

        train_lightgcn(ds, cfg.gcn, gcn_dir, run_cfg=cfg, progress=progress)
    inputs["gcn"] = gcn_dir
    return GcnArtifacts.load(gcn_dir), gcn_dir
