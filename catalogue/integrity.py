"""``modelsci check``: is the catalogue whole and consistent?"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelsci.catalogue.schema import KEY_BITS_SQL
from modelsci.catalogue.store import Catalogue
from modelsci.schemas.bundle import finding_key, replication_key
from modelsci.schemas.identity import sha256_file

__all__ = ["CheckReport", "check"]

# (what is wrong, the query that lists the offenders); each must return no rows.
_CONSISTENCY = [
    ("link end missing", """
        SELECT src_id || ' -' || relation || '-> ' || dst_id FROM finding_links
        WHERE src_id NOT IN (SELECT id FROM findings) OR dst_id NOT IN (SELECT id FROM findings)"""),
    ("finding refers to a missing model, dataset, analysis or run", """
        SELECT id FROM findings WHERE model_id NOT IN (SELECT id FROM models)
           OR (dataset_id IS NOT NULL AND dataset_id NOT IN (SELECT id FROM datasets))
           OR analysis_id NOT IN (SELECT id FROM analyses) OR run_id NOT IN (SELECT id FROM runs)"""),
    ("run refers to a missing model, dataset, analysis or verified run", """
        SELECT id FROM runs WHERE model_id NOT IN (SELECT id FROM models)
           OR (dataset_id IS NOT NULL AND dataset_id NOT IN (SELECT id FROM datasets))
           OR (train_dataset_id IS NOT NULL AND train_dataset_id NOT IN (SELECT id FROM datasets))
           OR (verifies_run_id IS NOT NULL AND verifies_run_id NOT IN (SELECT id FROM runs))
           OR analysis_id NOT IN (SELECT id FROM analyses)"""),
    ("finding whose seed is not its run's", """
        SELECT f.id FROM findings f JOIN runs r ON r.id = f.run_id WHERE f.seed <> r.seed"""),
    ("finding of a verification run that is not a verification finding, or the other way round", """
        SELECT f.id FROM findings f JOIN runs r ON r.id = f.run_id
        WHERE (f.status = 'verification') <> (r.verifies_run_id IS NOT NULL)
           OR (f.status = 'verification' AND f.version IS NOT NULL)"""),
    ("artifact of a missing finding", "SELECT id FROM artifacts WHERE finding_id NOT IN (SELECT id FROM findings)"),
    ("finding key without exactly one current version", """
        SELECT key_id FROM findings WHERE status <> 'verification'
        GROUP BY key_id HAVING count(*) FILTER (status = 'current') <> 1"""),
    ("finding versions not numbered 1..n", """
        SELECT key_id FROM findings WHERE status <> 'verification' GROUP BY key_id
        HAVING min(version) <> 1 OR max(version) <> count(*) OR count(DISTINCT version) <> count(*)"""),
    ("seed's current finding not judged against the first (lowest) seed's", """
        WITH cur AS (SELECT * FROM findings_current),
             firsts AS (SELECT replication_key, min(seed) AS seed, arg_min(id, seed) AS id,
                               arg_min_null(value, seed) AS value FROM cur GROUP BY replication_key)
        SELECT c.id FROM cur c JOIN firsts f ON f.replication_key = c.replication_key AND c.seed <> f.seed
        WHERE c.value IS NOT NULL AND f.value IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM finding_links l WHERE l.src_id = c.id AND l.dst_id = f.id
            AND l.relation IN ('replicates', 'contradicts'))"""),
    ("newer version without a supersedes link to the one before", """
        SELECT f.id FROM findings f JOIN findings p ON p.key_id = f.key_id AND p.version = f.version - 1
        WHERE NOT EXISTS (SELECT 1 FROM finding_links l WHERE l.src_id = f.id AND l.dst_id = p.id
                          AND l.relation = 'supersedes')"""),
    ("row added by a commit that is not in the history", """
        SELECT commit_id FROM (SELECT commit_id FROM models UNION ALL SELECT commit_id FROM datasets
            UNION ALL SELECT commit_id FROM analyses UNION ALL SELECT commit_id FROM runs
            UNION ALL SELECT commit_id FROM findings UNION ALL SELECT commit_id FROM finding_links
            UNION ALL SELECT commit_id FROM artifacts)
        WHERE commit_id NOT IN (SELECT id FROM commits)"""),
    ("commit sequence has a gap", "SELECT max(seq) FROM commits HAVING max(seq) <> count(*)"),
    ("finding whose key_bits do not match its replication key (version lookups would miss it)",
     f"SELECT id FROM store.findings WHERE key_bits IS DISTINCT FROM {KEY_BITS_SQL}"),
]


@dataclass
class CheckReport:
    """Problems make the check fail; notes (such as files no row refers to) do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artifacts_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(cat: Catalogue) -> CheckReport:
    """Every artifact present with its hash, every reference and link end present, versions,
    seeds and keys consistent."""
    report = CheckReport()
    with cat.reader() as con:
        for problem, query in _CONSISTENCY:
            for (what,) in con.execute(query).fetchall()[:20]:
                report.problems.append(f"{problem}: {what}")
        keys = con.execute("SELECT id, key_id, replication_key, model_id, dataset_id, analysis_name, params_hash, "
                           "kind, subject, seed FROM findings").fetchall()
        for finding, key, replication, *fields, seed in keys:
            if key != finding_key(*fields, seed=seed) or replication != replication_key(*fields):
                report.problems.append(f"finding whose key_id or replication_key does not match its key fields: "
                                       f"{finding}")
        artifacts = con.execute("SELECT id, path, sha256, bytes FROM artifacts ORDER BY path").fetchall()
    known: set[str] = set()
    for artifact_id, path, sha, size in artifacts:
        file = cat.root / path
        if file.name in known:  # one file can serve several findings; hash it once
            continue
        known.add(file.name)
        report.artifacts_checked += 1
        if file.is_symlink() or not file.is_file():
            report.problems.append(f"artifact missing: {path} (artifact {artifact_id})")
        elif file.stat().st_size != size or sha256_file(file) != sha:
            report.problems.append(f"artifact changed on disk: {path} does not match its sha256 {sha} "
                                   f"(artifact {artifact_id})")
    if cat.artifacts_dir.is_dir():
        for file in sorted(cat.artifacts_dir.iterdir()):
            if file.name not in known:
                report.notes.append(f"file no artifact refers to (left by an interrupted commit?): "
                                    f"artifacts/{file.name}")
    return report
