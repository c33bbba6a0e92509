"""Dataset adapters: a manifest's ``dataset`` section -> the rows as used, with their identity.

Sources: ``sklearn://NAME`` (scikit-learn's bundled iris, wine, breast_cancer, digits,
diabetes, with a recorded, seeded train/test split), ``hf://org/name`` (the repository's files
at one commit, through the hub cache, loaded with datasets), a ``datasets.save_to_disk``
folder, a ``.parquet`` or ``.csv`` file.

Columns are taken by name. A model that knows its feature names (scikit-learn's
``feature_names_in_``, ``features`` in a torch model's ``modelsci.json``) reads those columns
in its own order, wherever they are in the file; a missing one is an error naming it, extra
columns are ignored. The dataset's id covers exactly what the model reads (see
``schemas.identity``), and the resolved source (every role explicit, a hub revision pinned
to its commit sha) is recorded in ``Dataset.features["spec"]``, so the same rows can be read
again from the catalogue alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from modelsci.ingest.hub import is_hub, snapshot
from modelsci.ingest.images import ImageError, check_boxes, embed_images, image_folder, is_image_folder
from modelsci.ingest.models import VL_TASK, ModelInputs, source_name
from modelsci.schemas.entities import Dataset
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import dataset_id
from modelsci.schemas.manifest import DatasetSpec, DataSource
from modelsci.schemas.untrusted_files import limit, open_regular, regular_file, walk

__all__ = ["SKLEARN_DATASETS", "DatasetError", "DatasetHandle", "resolve_dataset", "resolve_training", "training_split"]

SKLEARN_DATASETS = {
    # name: (loader, is classification, license)
    "iris": ("load_iris", True, "CC BY 4.0 (UCI)"),
    "wine": ("load_wine", True, "CC BY 4.0 (UCI)"),
    "breast_cancer": ("load_breast_cancer", True, "CC BY 4.0 (UCI)"),
    "digits": ("load_digits", True, "CC BY 4.0 (UCI)"),
    "diabetes": ("load_diabetes", False, "public domain (Efron et al. 2004)"),
}
# Columns that play a role when the manifest does not name one, first match wins.
_DEFAULT_COLUMNS = {
    "label": ("label", "target", "labels", "score", "y"),
    "text": ("text", "sentence", "sentence1", "premise", "question"),
    "text_pair": ("text_pair", "sentence2", "hypothesis"),
    "image": ("image", "img", "pixel_values"),
}
# For text-generation a column named ``target`` is the continuation to explain, not a label.
_GENERATION_COLUMNS = {
    "prompt": ("prompt",), "target": ("target", "completion", "continuation"), "messages": ("messages",),
    "text": ("text",),
}


class DatasetError(ModelsciError, ValueError):
    """A dataset that cannot be resolved or does not have the columns the manifest names."""


@dataclass
class DatasetHandle:
    """The rows a model is studied on, and which columns play which role."""

    entity: Dataset
    table: pa.Table
    roles: dict[str, Any]

    @property
    def id(self) -> str:
        return self.entity.id

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved source (roles explicit, hub revision pinned): reading it again gives these rows."""
        return dict(self.entity.features["spec"])

    @property
    def feature_names(self) -> list[str]:
        """The feature columns in the order the model reads them."""
        return list(self.roles.get("features", []))

    def features(self) -> np.ndarray:
        """The feature columns, in the model's order, as a float64 matrix (rows x features)."""
        if not self.feature_names:
            raise DatasetError("the dataset has no feature columns (set dataset.columns.features)")
        return np.column_stack([self.table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                for c in self.feature_names])

    def labels(self) -> np.ndarray:
        if "label" not in self.roles:
            raise DatasetError("the dataset has no label column (set dataset.columns.label)")
        return self.table.column(self.roles["label"]).to_numpy(zero_copy_only=False)

    def texts(self, role: str = "text") -> list[str]:
        if role not in self.roles:
            raise DatasetError(f"the dataset has no {role} column (set dataset.columns.{role})")
        return [str(v) for v in self.table.column(self.roles[role]).to_pylist()]


def resolve_dataset(spec: DataSource, task: str, inputs: ModelInputs | None = None, *,
                    place: str = "dataset", location: Path | None = None) -> DatasetHandle:
    """Load the rows as used (split, limit), take the columns the model reads by name, and identify them.

    ``inputs`` (from ``ingest.models.model_inputs``) are the model's feature names and count;
    ``place`` names the manifest section in messages (``dataset`` or ``dataset.train``);
    ``location`` is where a local source is read when ``spec.source`` is the form the catalogue
    records (relative to the manifest's folder, or ``local:NAME``).
    """
    source = spec.source
    revision = spec.revision
    if source.startswith("sklearn://"):
        table, split, meta = _sklearn(spec, place)
    elif is_hub(source):
        table, split, meta = _hub(spec, place)
        revision = meta["revision"]
    else:
        table, split, meta = _local(spec.model_copy(update={"source": str(location)}) if location else spec, place)
    if spec.limit is not None:
        table = table.slice(0, spec.limit)
    roles = _roles(table, spec, task, inputs, place)
    table = _images(table, roles, spec, task, meta, place)
    resolved = DataSource.model_validate({**{k: getattr(spec, k) for k in DataSource.model_fields},
                                          "columns": roles, "revision": revision})
    entity = Dataset(
        id=dataset_id(table, {**roles, **({"template": spec.template} if spec.template else {})}, split, spec.limit), name=spec.name or source_name(source),
        source_uri=source, revision=revision,
        config=spec.config, split=split, row_limit=spec.limit, rows=table.num_rows,
        features={"columns": {f.name: str(f.type) for f in table.schema}, "roles": roles,
                  "spec": resolved.model_dump(mode="json"),
                  **({"split": meta["split"]} if "split" in meta else {})},
        license=meta.get("license"),
    )
    return DatasetHandle(entity, table, roles)


def _images(table: pa.Table, roles: dict[str, Any], spec: DataSource, task: str, meta: dict[str, Any],
            place: str) -> pa.Table:
    """The image column with every image's bytes embedded; a dual encoder's roles checked."""
    if task == VL_TASK:
        needed = ["image", "label"] if spec.template else ["image", "text"]
        missing = [r for r in needed if r not in roles]
        if missing:
            how = ("a label column and the template" if spec.template else
                   "a text column (image-text pairs), or a label column and dataset.template (zero-shot classes)")
            raise DatasetError(f"{place}.columns: {VL_TASK} needs {how}; no {' or '.join(missing)} column found "
                               f"(set dataset.columns.{missing[0]})")
        if spec.template is not None and "{label}" not in spec.template:
            raise DatasetError(f"{place}.template: {spec.template!r} has no {{label}} for the label to go")
        if spec.template is None and "boxes" not in roles and "boxes" in table.column_names:
            roles["boxes"] = "boxes"  # in place: the recorded roles (and so the resolved spec) name it
        if "boxes" in roles and spec.template is not None:
            raise DatasetError(f"{place}.columns.boxes: boxes name spans of each row's text; a zero-shot "
                               "dataset (dataset.template) has no text column for them to index")
    elif spec.template is not None:
        raise DatasetError(f"{place}.template: only {VL_TASK} models read a prompt template")
    if "boxes" in roles and task != VL_TASK:
        raise DatasetError(f"{place}.columns.boxes: only {VL_TASK} image-text datasets have boxes")
    if "image" not in roles:
        return table
    kind = table.schema.field(roles["image"]).type
    if task != VL_TASK and not (pa.types.is_struct(kind) or pa.types.is_binary(kind)):
        return table  # another model's image column (e.g. pixel values) is read as it is
    try:
        table = embed_images(table, roles["image"], meta.get("base"), place, meta.get("within"))
        if "boxes" in roles:
            table = check_boxes(table, roles["boxes"], [str(t) for t in table.column(roles["text"]).to_pylist()],
                                place)
        return table
    except ImageError as exc:
        raise DatasetError(str(exc)) from None


def _sklearn(spec: DataSource, place: str) -> tuple[pa.Table, str, dict[str, Any]]:
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    name = spec.source.removeprefix("sklearn://")
    if name not in SKLEARN_DATASETS:
        raise DatasetError(f"{place}.source: scikit-learn has no bundled dataset {name!r}; "
                           f"choose one of {sorted(SKLEARN_DATASETS)}")
    loader, classification, license_ = SKLEARN_DATASETS[name]
    data = getattr(sklearn.datasets, loader)(as_frame=True)
    frame = data.frame.rename(columns={data.target.name: "target"}) if data.target.name != "target" else data.frame
    split = {"test_size": spec.test_size, "random_state": spec.split_seed, "stratify": classification}
    if spec.split not in ("train", "test", "all"):
        raise DatasetError(f"{place}.split: sklearn:// datasets have the splits train, test and all, "
                           f"not {spec.split!r}")
    if spec.split != "all":
        train, test = train_test_split(frame, test_size=spec.test_size, random_state=spec.split_seed,
                                       stratify=frame["target"] if classification else None)
        frame = train if spec.split == "train" else test
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table, spec.split, {"license": license_, "split": split}


def _hub(spec: DataSource, place: str) -> tuple[pa.Table, str, dict[str, Any]]:
    """The split, read from the repository's files at the commit its revision resolves to."""
    import datasets

    # The snapshot is the repository at one commit: loading its files (not the repository by
    # name, which datasets resolves again on its own) makes the recorded sha the data read.
    folder, sha = snapshot(spec.source, spec.revision, repo_type="dataset")
    for file in walk(folder, what=f"{place}.source"):
        regular_file(file, within=folder.parent.parent, what=f"{place}.source")
    try:
        ds = datasets.load_dataset(str(folder), name=spec.config, split=spec.split)
    except Exception as exc:  # datasets raises many types for a missing config, split or file
        raise DatasetError(f"{place}.source: cannot load {spec.source} at {sha} (split {spec.split!r}): "
                           f"{type(exc).__name__}: {exc}") from None
    return ds.with_format("arrow")[:], spec.split, {"revision": sha, "base": folder, "within": folder.parent.parent}


def _local(spec: DataSource, place: str) -> tuple[pa.Table, str | None, dict[str, Any]]:
    path = Path(spec.source).expanduser()
    if not path.exists() and not path.is_symlink():
        raise DatasetError(f"{place}.source: {path} does not exist")
    if is_image_folder(path):
        return image_folder(path, place), None, {"base": path}
    if path.is_dir():
        import datasets

        for file in walk(path, what=f"{place}.source"):
            regular_file(file, within=path, what=f"{place}.source")
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise DatasetError(f"{place}.source: {path} is not a datasets.save_to_disk folder: {exc}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DatasetError(f"{place}.split: {path} has the splits {sorted(loaded)}, not {spec.split!r}")
            loaded = loaded[spec.split]
        return loaded.with_format("arrow")[:], spec.split, {"base": path}
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DatasetError(f"{place}.source: {path} is neither a .parquet nor a .csv file nor a "
                           "save_to_disk folder")
    try:
        with open_regular(path, what=f"{place}.source", max_bytes=limit("dataset")) as f:
            if suffix == ".parquet":
                import pyarrow.parquet as pq
                return pq.read_table(f), None, {"base": path.parent}  # image paths are relative to the file
            import pyarrow.csv as pacsv
            return pacsv.read_csv(f), None, {"base": path.parent}
    except pa.ArrowException as exc:
        raise DatasetError(f"{place}.source: cannot read {path}: {exc}") from None


def _roles(table: pa.Table, spec: DataSource, task: str, inputs: ModelInputs | None, place: str) -> dict[str, Any]:
    """The manifest's column roles, checked against the table, with defaults filled in and the
    features in the order the model reads them; every problem is reported at once."""
    names = table.column_names
    roles: dict[str, Any] = dict(spec.columns)
    problems = []
    for role, value in roles.items():
        for column in value if isinstance(value, list) else [value]:
            if column not in names:
                problems.append(f"{place}.columns.{role}: no column {column!r} in the data "
                                f"(it has: {', '.join(names)})")
    if inputs is not None and inputs.names is not None:
        given = roles.get("features")
        if given is not None and set(given) != set(inputs.names):
            problems.append(f"{place}.columns.features: the model reads the columns {inputs.names} "
                            f"({inputs.known_from}), not {given}; leave features out to take the model's")
        else:
            missing = [c for c in inputs.names if c not in names]
            if missing:
                problems.append(f"{place}.columns.features: no column {', '.join(repr(c) for c in missing)} in the data, "
                                f"which the model reads ({inputs.known_from}); the data has: {', '.join(names)}")
        roles["features"] = list(inputs.names)
    if problems:
        raise DatasetError("; ".join(dict.fromkeys(problems)))
    for role, candidates in (_GENERATION_COLUMNS if task == "text-generation" else _DEFAULT_COLUMNS).items():
        if role not in roles:
            column = next((n for n in candidates if n in names), None)
            if column is not None:
                roles[role] = column
    if "features" not in roles and (task.startswith("tabular") or (task == "image-classification" and "image" not in roles)):
        taken = {v for k, v in roles.items() if k != "features"}
        roles["features"] = [f.name for f in table.schema
                             if f.name not in taken and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    count = inputs.count if inputs is not None else None
    if count is not None and "features" in roles and len(roles["features"]) != count:
        given = roles["features"]
        shown = ", ".join(given[:8]) + (", ..." if len(given) > 8 else "")
        raise DatasetError(f"{place}.columns.features: the model reads {count} feature(s) ({inputs.known_from}), "
                           f"the data gives {len(given)} ({shown})")
    return roles


def resolve_training(spec: DatasetSpec, test: DatasetHandle, task: str,
                     inputs: ModelInputs | None = None, *, location: Path | None = None) -> DatasetHandle | None:
    """The data retraining analyses fit on: ``dataset.train`` (its columns default to the
    dataset's; a local one read at ``location``), else the seeded train split of an ``sklearn://``
    source; None when there is none."""
    if spec.train is None:
        return training_split(test, task, inputs)
    columns = {**test.roles, **spec.train.columns}
    return resolve_dataset(spec.train.model_copy(update={"columns": columns}), task, inputs, place="dataset.train",
                           location=location)


def training_split(test: DatasetHandle, task: str, inputs: ModelInputs | None = None) -> DatasetHandle | None:
    """The train split behind an ``sklearn://`` test split (same seed and share, all its rows); None
    for other sources."""
    entity = test.entity
    split = entity.features.get("split")
    if not entity.source_uri.startswith("sklearn://") or split is None:
        return None
    spec = DataSource(source=entity.source_uri, split="train", test_size=split["test_size"],
                      split_seed=split["random_state"], columns=test.roles)
    return resolve_dataset(spec, task, inputs, place="dataset.train")
