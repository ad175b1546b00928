"""Lineage: whether anything a result came from has changed since it was made.

The provenance records (`qrnca.workflow.provenance`) name every input of a job by checksum, so
`lineage` walks from any result back to the raw downloads and says, file by file, whether the
bytes on disk are still the ones that were used ("ok"), differ ("changed") or are gone
("missing"): `qrnca-lineage results/<model>/tables/table4_pcr.csv`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .provenance import PROVENANCE_DIR, ProvenanceError, checksum, record_path, workdir_path


def read_record(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvenanceError(f"{path}: cannot read provenance record ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"{path}: invalid provenance record ({exc.msg})") from None
    if not isinstance(record, dict) or "outputs" not in record or "inputs" not in record:
        raise ProvenanceError(f"{path}: not a provenance record (no inputs/outputs)")
    return record


def lineage(path: str | os.PathLike, root: str | os.PathLike = ".",
            provenance_dir: str | os.PathLike = PROVENANCE_DIR) -> list[dict]:
    """Walk from `path` back through the records of its inputs to files without a record.

    Returns nodes in depth-first order, each
    {"path", "depth", "rule" (None for a file no job recorded, e.g. a raw download or a config),
     "name" (the input's name in the consuming rule), "sha256" (as recorded: by the producing
     job for the root, by the consuming job for an input), "current_sha256", "status",
     "repeat" (True when this file's upstream was already shown above)}.
    status: "ok" (bytes unchanged), "changed" or "missing". A file reached twice is expanded once.
    Raises ProvenanceError when `path` itself has no record.
    """
    root = Path(root)
    rel = workdir_path(path, root)
    rec_path = record_path(rel, root, provenance_dir)
    if not rec_path.exists():
        raise ProvenanceError(f"{rel}: no provenance record (looked for {rec_path})")
    record = read_record(rec_path)
    own = next((o for o in record["outputs"] if o["path"] == rel), None)
    if own is None:
        raise ProvenanceError(f"{rec_path}: record does not list {rel} among its outputs")
    nodes: list[dict] = []
    seen: set[str] = set()
    current_cache: dict[str, str | None] = {}

    def current(p: str) -> str | None:
        if p not in current_cache:
            current_cache[p] = checksum(Path(p) if Path(p).is_absolute() else root / p)["sha256"]
        return current_cache[p]

    def visit(p: str, recorded: str | None, depth: int, name: str | None):
        now = current(p)
        status = "missing" if now is None else ("ok" if now == recorded else "changed")
        rp = record_path(p, root, provenance_dir)
        rec = read_record(rp) if rp.exists() else None
        node = {"path": p, "depth": depth, "rule": rec["rule"] if rec else None, "name": name,
                "sha256": recorded, "current_sha256": now, "status": status,
                "repeat": p in seen}
        nodes.append(node)
        if rec is None or p in seen:
            return
        seen.add(p)
        if depth > 0:
            # the producer's own view: an output rewritten after its record was written
            produced = next((o for o in rec["outputs"] if o["path"] == p), None)
            if produced is not None and now is not None and produced["sha256"] != now:
                node["status"] = "changed"
                node["produced_sha256"] = produced["sha256"]
        for inp in rec["inputs"]:
            visit(inp["path"], inp.get("sha256"), depth + 1, inp.get("name"))

    visit(rel, own["sha256"], 0, None)
    return nodes


def lineage_flagged(nodes: list[dict]) -> bool:
    """True when any file in the lineage changed or is missing."""
    return any(n["status"] != "ok" for n in nodes)


def format_lineage(nodes: list[dict]) -> str:
    """An indented tree: path, [rule], short sha256, status (with the current checksum when it
    differs). The library files a job ran (inputs named `code`) are summed up in one line per
    job unless one of them changed."""
    lines = []
    k = 0
    while k < len(nodes):
        n = nodes[k]
        if n["name"] == "code":
            group = [n]
            while (k + len(group) < len(nodes) and nodes[k + len(group)]["name"] == "code"
                   and nodes[k + len(group)]["depth"] == n["depth"]):
                group.append(nodes[k + len(group)])
            if all(g["status"] == "ok" for g in group):
                lines.append(f"{'  ' * n['depth']}code: {len(group)} library file(s)  ok")
                k += len(group)
                continue
        short = (n["sha256"] or "-")[:12]
        rule = f"[{n['rule']}]" if n["rule"] else "(no record)"
        status = n["status"]
        if status == "changed":
            status += f" (now {(n['current_sha256'] or '-')[:12]})"
        more = " ^ see above" if n["repeat"] and n["rule"] else ""
        lines.append(f"{'  ' * n['depth']}{n['path']}  {rule}  {short}  {status}{more}")
        k += 1
    bad = [n for n in nodes if n["status"] != "ok"]
    if bad:
        lines.append(f"FLAGGED: {len(bad)} file(s) changed or missing since they were used; "
                     "results downstream of them are stale.")
    else:
        lines.append(f"ok: {len(nodes)} file(s), all unchanged since they were used.")
    return "\n".join(lines)


def lineage_main(argv: list[str] | None = None) -> int:
    """`qrnca-lineage PATH [--json]`: print the lineage of a result; exit 1 if anything upstream
    changed or is missing, 2 if PATH has no record."""
    parser = argparse.ArgumentParser(
        prog="qrnca-lineage",
        description="Trace a result back through its provenance records and check every "
                    "upstream file's sha256 against the bytes on disk.")
    parser.add_argument("path", help="a result file, e.g. results/<model>/tables/table4_pcr.csv")
    parser.add_argument("--root", default=".", help="the workflow's working directory (default .)")
    parser.add_argument("--provenance-dir", default=str(PROVENANCE_DIR),
                        help=f"records directory below ROOT (default {PROVENANCE_DIR})")
    parser.add_argument("--json", action="store_true", help="print the nodes as JSON")
    args = parser.parse_args(argv)
    try:
        nodes = lineage(args.path, args.root, args.provenance_dir)
    except ProvenanceError as exc:
        print(f"qrnca-lineage: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"path": nodes[0]["path"], "flagged": lineage_flagged(nodes),
                          "nodes": nodes}, indent=2, ensure_ascii=False))
    else:
        print(format_lineage(nodes))
    return 1 if lineage_flagged(nodes) else 0


if __name__ == "__main__":
    sys.exit(lineage_main())
