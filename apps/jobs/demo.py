"""The demo's items of each answer kind and their true answers, shared by `seeddemo` (its demo
jobs) and `simulate --kind` (a fresh job of one kind): captions, search results, readings and
pictures that show the truth, so no network and no image files are needed."""

from __future__ import annotations

import base64
import io
import json

import numpy as np

from apps.accounts.models import Organization
from apps.jobs.models import Job
from apps.jobs.services import item_ingest, job_create, job_launch

CLASSES = ["cat", "dog", "bird"]


# What the demo's "photos" show, in words (a caption each, so the demo needs no network and
# no image files): the main subject, sometimes another animal in the background.
SUBJECTS = {
    "cat": [
        "a tabby curled up on a windowsill, whiskers twitching",
        "a kitten chasing a ball of wool across the carpet",
        "a grey animal with pointed ears purring on a lap",
        "a black cat stretching on a garden wall",
    ],
    "dog": [
        "a retriever fetching a stick from the lake",
        "a puppy chewing a slipper, tail wagging",
        "a sheepdog herding a flock across a field",
        "a small terrier barking at the postman",
    ],
    "bird": [
        "a robin perched on a snowy branch",
        "a parrot with bright green feathers on a swing",
        "a gull gliding over the harbour",
        "a sparrow pecking crumbs on a café table",
    ],
}
BACKGROUND = {"cat": "a cat dozing", "dog": "a dog sniffing", "bird": "a bird on a wire"}


def demo_caption(true_class: int, rng: np.random.Generator) -> str:
    """The demo item's caption: the true animal as the main subject, a third of the time
    with another animal in the background (the instructions say: the main subject)."""
    name = CLASSES[true_class]
    text = SUBJECTS[name][int(rng.integers(0, len(SUBJECTS[name])))]
    if rng.random() < 0.35:
        other = CLASSES[int(rng.integers(0, len(CLASSES)))]
        text += f"; in the background, {BACKGROUND[other]}"
    return text[0].upper() + text[1:] + "."


def demo_rows(n_items: int, n_gold: int, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Items with 8-dimensional features clustered by class, a few of them gold, shuffled in
    among the others; and each item's true class by external id, for the simulated crowd.

    The truth stays out of the payload and the ids say nothing about gold: annotators are
    shown the payload, and nothing they see may tell a gold item from another.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.6, size=(len(CLASSES), 8))
    truth = rng.integers(0, len(CLASSES), size=n_items + n_gold)
    features = centers[truth] + rng.normal(0.0, 1.0, size=(len(truth), 8))
    gold = set(rng.choice(n_items + n_gold, size=n_gold, replace=False).tolist())
    rows = []
    for i, (t, x) in enumerate(zip(truth, features, strict=True)):
        row: dict = {
            "external_id": f"photo-{i:04d}",
            "payload": {"text": demo_caption(int(t), rng)},
            "features": [round(float(v), 4) for v in x],
        }
        if i in gold:
            row["gold_label"] = CLASSES[t]
        rows.append(row)
    return rows, {f"photo-{i:04d}": CLASSES[t] for i, t in enumerate(truth)}


# One small demo job of each other answer kind, so every page shows every kind:
# (name, instructions, label_schema).
KIND_JOBS = {
    "multi_choice": (
        "Demo: scene tags",
        "Tick every tag that applies to the scene.",
        {"kind": "multi_choice", "tags": ["indoor", "outdoor", "people", "animal", "vehicle"]},
    ),
    "ordinal": (
        "Demo: search relevance",
        "How well does the result answer the query?",
        {"kind": "ordinal", "levels": ["irrelevant", "marginal", "relevant", "perfect"]},
    ),
    "numeric": (
        "Demo: thermometer readings",
        "Read the temperature the description gives, in degrees Celsius.",
        {"kind": "numeric", "minimum": 0, "maximum": 40, "unit": "°C", "tolerance": 1.5},
    ),
    "bbox": (
        "Demo: cars and people",
        "Draw a box around every car (wide, blue) and every person (tall, red).",
        {"kind": "bbox", "classes": ["car", "person"], "width": 320, "height": 240},
    ),
}
SCENE = {
    "indoor": "inside a room",
    "outdoor": "out in the open air",
    "people": "a few people chatting",
    "animal": "a dog at their feet",
    "vehicle": "a parked car",
}
# (query, result, how relevant); the demo items cycle through them.
SEARCHES = [
    ("cheap flights to Lisbon", "Lisbon flights from 29 EUR: compare airlines", "perfect"),
    ("cheap flights to Lisbon", "Lisbon travel guide: ten things to see", "marginal"),
    ("cheap flights to Lisbon", "How to make Portuguese custard tarts", "irrelevant"),
    ("cheap flights to Lisbon", "Budget airlines flying from your city", "relevant"),
    ("how to repot a cactus", "Repotting cacti without getting pricked, step by step", "perfect"),
    ("how to repot a cactus", "Choosing soil for succulents", "relevant"),
    ("how to repot a cactus", "Desert landscapes of Arizona", "marginal"),
    ("how to repot a cactus", "Cheap flights to Phoenix", "irrelevant"),
]
COLOURS = {"car": "#2563eb", "person": "#dc2626"}


def _scene_tags(rng: np.random.Generator) -> list[str]:
    tags = KIND_JOBS["multi_choice"][2]["tags"]
    chosen = {str(rng.choice(["indoor", "outdoor"]))}
    chosen |= {t for t in ("people", "animal", "vehicle") if rng.random() < 0.45}
    return [t for t in tags if t in chosen]


def _reading(value: float) -> str:
    low = int(value // 5 * 5)
    closer = "lower" if value - low < 2.5 else "upper"
    return (
        f"The mercury sits between the {low} and {low + 5} marks, closer to the {closer} one "
        f"({value - low:.1f} above {low}, if you read it closely)."
    )


def _boxes(rng: np.random.Generator) -> list[dict]:
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        name = str(rng.choice(["car", "person"]))
        w, h = (float(rng.uniform(70, 110)), float(rng.uniform(35, 55)))
        if name == "person":
            w, h = h * 0.6, w
        x, y = float(rng.uniform(0, 320 - w)), float(rng.uniform(0, 240 - h))
        boxes.append({"box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)], "class": name})
    return boxes


def _picture(boxes: list[dict]) -> str:
    """The boxes drawn as an SVG picture (a data URL: the demo needs no image files)."""
    shapes = "".join(
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{COLOURS[b["class"]]}"/>'
        for b in boxes
        for x, y, w, h in [b["box"]]
    )
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240">'
        f'<rect width="320" height="240" fill="#e5e7eb"/>{shapes}</svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def kind_demo_rows(
    kind: str, n_items: int, n_gold: int, seed: int
) -> tuple[list[dict], dict[str, object]]:
    """A kind's demo items (the truth shown in the payload's words or picture, a few of
    them gold) and each item's true answer by external id, for the simulated crowd."""
    rng = np.random.default_rng(seed + len(kind))
    gold = set(rng.choice(n_items, size=n_gold, replace=False).tolist())
    rows, truth = [], {}
    for i in range(n_items):
        external_id = f"{kind}-{i:03d}"
        payload: dict
        if kind == "multi_choice":
            true: object = _scene_tags(rng)
            payload = {"text": "A photo " + ", ".join(SCENE[t] for t in true) + "."}
        elif kind == "ordinal":
            query, result, true = SEARCHES[i % len(SEARCHES)]
            payload = {"text": result, "query": query}
        elif kind == "numeric":
            true = round(float(rng.uniform(2, 38)), 1)
            payload = {"text": _reading(float(true))}
        else:
            true = _boxes(rng)
            payload = {"text": "Box every car and every person.", "image": _picture(true)}
        row = {"external_id": external_id, "payload": payload}
        if i in gold:
            row["gold_label"] = true
        rows.append(row)
        truth[external_id] = true
    return rows, truth


def demo_job_launch(
    *,
    organization: Organization,
    name: str,
    instructions: str,
    schema: dict,
    rows: list[dict],
    **policy: float,
) -> tuple[Job, int]:
    """A demo job made, its rows uploaded and launched: the job and how many items it got.
    The demo's policy (3 to 5 labels, a tenth gold answers) and prices, with `policy` on top."""
    job = job_create(
        organization=organization,
        created_by=None,
        name=name,
        instructions=instructions,
        label_schema=schema,
        policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1, **policy},
        pricing={"crowd_label": 0.05, "expert_label": 0.5},
    )
    report = item_ingest(job=job, stream=io.BytesIO(json.dumps(rows).encode()), fmt="json")
    return job_launch(job=job), report.created
