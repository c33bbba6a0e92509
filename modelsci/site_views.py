"""What the site's overview parts show, computed from the catalogue's rows: lineage, inherited
findings, the home page's headlines and recent changes, and the rows of the models and datasets
indexes.

Plain functions over the rows ``site_build.Site`` loads (dicts, as the tables give them); they
return rows for the templates, never markup, so that every contributor value still reaches the
page through the templates' escaping.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from modelsci.catalogue.store import Catalogue

__all__ = ["ancestor_findings", "children_of", "dataset_index", "home_headlines", "inherited_findings", "is_derived",
           "lineage", "model_index", "newest_findings", "recent_changes"]

_MAX_DEPTH = 64  # a crafted import could make base_model_id a cycle: stop walking it somewhere


def is_derived(model: dict[str, Any]) -> bool:
    """Whether an analysis made the model (a Rashomon set member, ...) rather than someone submitting it."""
    if model.get("origin") is not None:
        return model["origin"] == "derived"
    return model.get("base_model_id") is not None


def children_of(models: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each model's direct descendants (the models whose ``base_model_id`` it is), by name then id."""
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for model in models.values():
        if model.get("base_model_id"):
            children[model["base_model_id"]].append(model)
    for rows in children.values():
        rows.sort(key=lambda m: (_natural(m.get("name") or m["source_uri"]), m["id"]))
    return children


def _natural(text: str) -> tuple[tuple[int, str], ...]:
    """A sort key under which "member 10" follows "member 9"."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text) if part)


def lineage(models: dict[str, dict[str, Any]], children: dict[str, list[dict[str, Any]]],
            model: dict[str, Any]) -> dict[str, Any]:
    """A model's relatives through ``base_model_id``: ancestors nearest first, then descendants by depth.

    ``missing_base`` is the base model the card names when it is not in the catalogue.
    """
    ancestors: list[tuple[int, dict[str, Any]]] = []
    seen = {model["id"]}
    current = model
    while current.get("base_model_id") in models and current["base_model_id"] not in seen and len(ancestors) < _MAX_DEPTH:
        current = models[current["base_model_id"]]
        seen.add(current["id"])
        ancestors.append((len(ancestors) + 1, current))
    descendants: list[tuple[int, dict[str, Any]]] = []
    level, depth = [model], 0
    while level and depth < _MAX_DEPTH:
        depth += 1
        level = [c for parent in level for c in children.get(parent["id"], []) if c["id"] not in seen]
        seen.update(c["id"] for c in level)
        descendants.extend((depth, c) for c in level)
    missing = model.get("base_model") if model.get("base_model") and model.get("base_model_id") not in models else None
    return {"ancestors": ancestors, "descendants": descendants, "missing_base": missing}


def ancestor_findings(cat: Catalogue) -> dict[str, dict[str, tuple[int, set[str]]]]:
    """model id -> ancestor id -> (distance, replication keys of the ancestor's current findings), from ``findings_lineage``."""
    found: dict[str, dict[str, tuple[int, set[str]]]] = defaultdict(dict)
    rows = cat.query("SELECT DISTINCT model_id, relative_id, distance, replication_key FROM findings_lineage "
                     "WHERE relation = 'ancestor'").to_pylist()
    for row in rows:
        distance, keys = found[row["model_id"]].setdefault(row["relative_id"], (row["distance"], set()))
        keys.add(row["replication_key"])
    return found


def _comparable(summary: dict[str, Any]) -> tuple:
    """What makes two models' summaries comparable: the replication key without the model."""
    return (summary["dataset_id"], summary["analysis_name"], summary["params_hash"], summary["kind"], summary["subject"])


def inherited_findings(model: dict[str, Any], ancestors: dict[str, tuple[int, set[str]]],
                       models: dict[str, dict[str, Any]],
                       summaries: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The whole-model findings of each ancestor, nearest first, each beside this model's own value for the same key.

    One entry per ancestor: ``model``, ``distance``, ``rows`` (the ancestor's summary, and
    ``own``: this model's summary of the same analysis, dataset, parameters, kind and subject, or
    None) and ``parts``: how many more of its findings are about parts of it (features,
    examples), left to its own page.
    """
    own = {_comparable(s): s for s in summaries.get(model["id"], [])}
    shown = []
    for relative_id, (distance, keys) in sorted(ancestors.items(), key=lambda item: (item[1][0], item[0])):
        if relative_id not in models:
            continue
        theirs = [s for s in summaries.get(relative_id, []) if s["replication_key"] in keys]
        whole = [s for s in theirs if s["subject"] == ""]
        shown.append({"model": models[relative_id], "distance": distance, "parts": len(theirs) - len(whole),
                      "rows": [{"summary": s, "own": own.get(_comparable(s))} for s in whole]})
    return shown


def home_headlines(boards: list[dict[str, Any]], limit: int = 15) -> list[dict[str, Any]]:
    """The submitted model listed first on each leaderboard: evaluations first (how good each model is),
    then the boards with the most submitted models.

    Derived models (a Rashomon set's members) are left out: they are listed on their base model's page.
    """
    headlines = []
    for board in boards:
        rows = [(m, s) for m, s in board["rows"] if not is_derived(m)]
        if rows:
            headlines.append({"board": board, "model": rows[0][0], "summary": rows[0][1], "n_models": len(rows)})
    headlines.sort(key=lambda h: (not h["board"]["analysis"].startswith("evaluation."), -h["n_models"],
                                  h["board"]["analysis"], h["board"]["kind"], h["board"]["dataset_id"],
                                  h["board"]["params_hash"]))
    return headlines[:limit]


def newest_findings(summaries: dict[str, list[dict[str, Any]]], findings: dict[str, dict[str, Any]],
                    commits: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]],
                    limit: int = 10) -> list[dict[str, Any]]:
    """The whole-model findings (seeds summarised) about submitted models that the latest commits added, newest first."""
    rows = []
    for model_id, items in summaries.items():
        if model_id not in models or is_derived(models[model_id]):
            continue
        for s in items:
            first = findings.get(s["first_id"])
            commit = commits.get(first["commit_id"]) if first else None
            if s["subject"] == "" and commit is not None:
                rows.append((commit["seq"], s, commit))
    rows.sort(key=lambda r: (-r[0], r[1]["analysis_name"], r[1]["kind"], r[1]["model_id"]))
    return [{"summary": s, "commit": c, "model": models[s["model_id"]]} for _, s, c in rows[:limit]]


def _plural(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def _names(rows: list[dict[str, Any]], limit: int = 3) -> str:
    names = [r.get("name") or r["source_uri"] for r in rows]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def recent_changes(tables: dict[str, list[dict[str, Any]]], models: dict[str, dict[str, Any]],
                   limit: int = 10) -> list[dict[str, Any]]:
    """The latest commits, newest first, each with what it added said in words (``changes``, a list of sentences)."""
    latest = sorted(tables["commits"], key=lambda c: -c["seq"])[:limit]
    wanted = {c["id"] for c in latest}
    by_commit: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for table in ("models", "datasets", "analyses", "runs", "findings"):
        for row in tables[table]:
            if row.get("commit_id") in wanted:
                by_commit[row["commit_id"]][table].append(row)
    changes = []
    for commit in latest:
        added = by_commit.get(commit["id"], {})
        words: list[str] = []
        submitted = [m for m in added.get("models", []) if not is_derived(m)]
        derived = [m for m in added.get("models", []) if is_derived(m)]
        if submitted:
            words.append(f"registered {_plural(len(submitted), 'model')}: {_names(submitted)}")
        if derived:
            bases = [models[b] for b in sorted({m["base_model_id"] for m in derived if m.get("base_model_id") in models})]
            words.append(f"{_plural(len(derived), 'derived model')}" + (f" of {_names(bases)}" if bases else ""))
        if added.get("datasets"):
            words.append(f"{_plural(len(added['datasets']), 'dataset')}: {_names(added['datasets'])}")
        findings = [f for f in added.get("findings", []) if f["status"] != "verification"]
        by_analysis: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in findings:
            by_analysis[f["analysis_name"]].append(f)
        for analysis, items in sorted(by_analysis.items()):
            about = [models[m] for m in sorted({f["model_id"] for f in items}) if m in models]
            newer = sum((f["version"] or 1) > 1 for f in items)
            words.append(f"{_plural(len(items), 'finding')} from {analysis}" + (f" about {_names(about)}" if about else "")
                         + (f" ({newer} of them new versions of earlier findings)" if newer else ""))
        verified = [f for f in added.get("findings", []) if f["status"] == "verification"]
        if verified:
            words.append(f"{_plural(len(verified), 'verification finding')} re-running earlier runs")
        failed = Counter(r["analysis_id"] for r in added.get("runs", []) if r["status"] == "failed")
        for analysis_id, n in sorted(failed.items()):
            words.append(f"{_plural(n, 'failed run')} of {analysis_id}")
        if not words and added.get("analyses"):
            words.append(f"registered {_plural(len(added['analyses']), 'analysis', 'analyses')}")
        changes.append({"commit": commit, "changes": words or ["no new rows"]})
    return changes


def _options(rows: list[dict[str, Any]], column: str) -> list[str]:
    return sorted({str(r[column]) for r in rows if r.get(column) not in (None, "")})


def model_index(models: dict[str, dict[str, Any]], summaries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The models index: submitted and derived models apart, each with its number of findings, and the filters' choices.

    A model's findings are counted as its page shows them: current findings, seeds summarised.
    """
    ordered = sorted(models.values(), key=lambda m: (_natural(m.get("name") or m["source_uri"]), m["id"]))
    rows = [{"model": m, "findings": len(summaries.get(m["id"], []))} for m in ordered]
    submitted = [r for r in rows if not is_derived(r["model"])]
    derived = [r for r in rows if is_derived(r["model"])]
    every = [r["model"] for r in rows]
    return {"submitted": submitted, "derived": derived,
            "filters": [(column, _options(every, column)) for column in ("task", "framework", "license")]}


def dataset_index(datasets: dict[str, dict[str, Any]], summaries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The datasets index: each dataset with the models studied on it and their findings, and the license filter's choices."""
    models: dict[str, set[str]] = defaultdict(set)
    findings: Counter[str] = Counter()
    for model_id, items in summaries.items():
        for s in items:
            models[s["dataset_id"]].add(model_id)
            findings[s["dataset_id"]] += 1
    ordered = sorted(datasets.values(), key=lambda d: (_natural(d.get("name") or d["source_uri"]), d.get("split") or "", d["id"]))
    return {"rows": [{"dataset": d, "models": len(models[d["id"]]), "findings": findings[d["id"]]} for d in ordered],
            "filters": [("license", _options(ordered, "license"))]}
