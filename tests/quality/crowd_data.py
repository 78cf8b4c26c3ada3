"""Loads the categorical crowd datasets in tests/data/crowd as integer-coded arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "crowd"


@dataclass(frozen=True)
class CrowdDataset:
    """One dataset, deduplicated and coded as 0-based integers."""

    name: str
    tasks: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    n_tasks: int
    n_workers: int
    n_classes: int
    # truth[t] is the true class of task t, or -1 where the task has no gold label.
    truth: np.ndarray

    @property
    def n_answers(self) -> int:
        return int(self.tasks.size)

    def frame(self) -> pd.DataFrame:
        """The answers as the task/worker/label frame Crowd-Kit expects."""
        return pd.DataFrame({"task": self.tasks, "worker": self.workers, "label": self.labels})

    def accuracy(self, predicted: np.ndarray) -> float:
        """Share of gold tasks whose predicted class matches the truth."""
        mask = self.truth >= 0
        return float(np.mean(np.asarray(predicted)[mask] == self.truth[mask]))


def dataset_names() -> list[str]:
    """Names of the categorical datasets, in the order of datasets.json."""
    meta = json.loads((DATA_DIR / "datasets.json").read_text())
    return [
        m["name"]
        for m in meta
        if m["kind"] == "categorical" and (DATA_DIR / m["name"] / "answers.csv").exists()
    ]


def _label_key(value: str) -> tuple[int, float | str]:
    # Labels are strings of small integers; sort them numerically so class 0 is the smallest.
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


@cache
def load(name: str) -> CrowdDataset:
    """Read one dataset; duplicated (task, worker) rows keep the LAST answer in file order.

    Keeping the last answer models a worker who corrected themselves; the same frame is
    handed to Crowd-Kit, so both sides see identical input.
    """
    answers = pd.read_csv(DATA_DIR / name / "answers.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(DATA_DIR / name / "truth.csv", dtype=str, keep_default_na=False)
    answers = answers.drop_duplicates(["task", "worker"], keep="last")
    values = sorted(set(answers["label"]) | set(truth["label"]), key=_label_key)
    label_code = {v: i for i, v in enumerate(values)}
    task_codes, task_index = pd.factorize(answers["task"], sort=True)
    worker_codes, worker_index = pd.factorize(answers["worker"], sort=True)
    truth_arr = np.full(len(task_index), -1, dtype=np.int64)
    pos = task_index.get_indexer(truth["task"])
    keep = pos >= 0
    truth_arr[pos[keep]] = truth["label"][keep].map(label_code).to_numpy()
    return CrowdDataset(
        name=name,
        tasks=task_codes.astype(np.int64),
        workers=worker_codes.astype(np.int64),
        labels=answers["label"].map(label_code).to_numpy(np.int64),
        n_tasks=len(task_index),
        n_workers=len(worker_index),
        n_classes=len(values),
        truth=truth_arr,
    )
