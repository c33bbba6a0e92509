"""The typed schema of modelsci: entities, content identities and result bundles."""

from modelsci.schemas.bundle import BundleArtifact, ResultBundle, finding_key, params_hash
from modelsci.schemas.entities import (
    ENTITIES,
    Analysis,
    Artifact,
    Commit,
    Dataset,
    Finding,
    FindingLink,
    FindingStatus,
    LinkRelation,
    ModelInstance,
    Pillar,
    Run,
    RunStatus,
)
from modelsci.schemas.identity import content_id, dataset_id, tensor_hash_of_arrays, tensor_hash_of_files

__all__ = [
    "ENTITIES", "Analysis", "Artifact", "BundleArtifact", "Commit", "Dataset", "Finding",
    "FindingLink", "FindingStatus", "LinkRelation", "ModelInstance", "Pillar", "ResultBundle",
    "Run", "RunStatus", "content_id", "dataset_id", "finding_key", "params_hash",
    "tensor_hash_of_arrays", "tensor_hash_of_files",
]
