"""Runs models over labelled test images in batches: labels mapped onto each model's label map,
undecodable images skipped and listed, the most confidently wrong images kept for the report."""

import heapq
import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from core import errors
from evaluator import data, models

# Class names quoted in full in an error; longer label maps are cut to this many.
NAMES_SHOWN = 20


class UnknownClasses(errors.UserError):
    """The test data holds a class the model was not trained on."""


@dataclass
class Predictions:
    """One model's predictions on the images it and every other model could classify."""

    class_names: list[str]
    y_true: np.ndarray  # [N] indices into class_names
    probabilities: np.ndarray  # [N, C]
    uris: list[str]
    wrong: list[dict]  # most confident first: {"image", "true", "predicted", "confidence", "name"}

    def rows(self) -> Iterator[dict]:
        """predictions.jsonl rows: path, true and predicted class, confidence of the prediction."""
        predicted = self.probabilities.argmax(axis=1)
        for uri, true, guess, scores in zip(
            self.uris, self.y_true, predicted, self.probabilities, strict=True
        ):
            yield {
                "path": uri,
                "true": self.class_names[true],
                "predicted": self.class_names[guess],
                "confidence": round(float(scores[guess]), 6),
                "correct": bool(true == guess),
            }


@dataclass
class Collector:
    classifier: models.Classifier
    keep_wrong: int
    y_true: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    uris: list[str] = field(default_factory=list)
    heap: list[tuple[float, int, dict]] = field(default_factory=list)

    def add(self, example: data.Example, scores: np.ndarray) -> None:
        true = self.classifier.index[example.label]
        predicted = int(scores.argmax())
        self.y_true.append(true)
        self.scores.append(scores)
        self.uris.append(example.uri)
        if predicted == true or not self.keep_wrong:
            return
        confidence = float(scores[predicted])
        names = self.classifier.class_names
        entry = (
            confidence,
            -len(self.y_true),  # ties: the earlier image first
            {
                "image": example.content,
                "true": names[true],
                "predicted": names[predicted],
                "confidence": confidence,
                "name": short_name(example.uri),
            },
        )
        if len(self.heap) < self.keep_wrong:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heappushpop(self.heap, entry)

    def result(self) -> Predictions:
        num_classes = len(self.classifier.class_names)
        return Predictions(
            class_names=self.classifier.class_names,
            y_true=np.array(self.y_true, dtype=np.int64),
            probabilities=np.array(self.scores, dtype=np.float32).reshape(-1, num_classes),
            uris=self.uris,
            wrong=[entry for _, _, entry in sorted(self.heap, reverse=True)],
        )


def predict(
    classifiers: list[models.Classifier],
    examples: Iterable[data.Example],
    batch_size: int,
    keep_wrong: int = 0,
    total: int | None = None,
    where: str = "the test data",
    progress: bool | None = None,
) -> tuple[list[Predictions], list[dict]]:
    """Each classifier's predictions on the same images, and the images skipped
    ({"path", "reason"}: unreadable, unlabelled, or not decodable by one of the models).

    A label unknown to any classifier raises UnknownClasses as soon as it is seen.
    """
    collectors = [Collector(classifier, keep_wrong) for classifier in classifiers]
    skipped: list[dict] = []
    bar = tqdm(
        total=total,
        unit="img",
        desc=f"evaluate {classifiers[0].source.name}",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    with bar:
        iterator = iter(examples)
        while batch := list(itertools.islice(iterator, batch_size)):
            predict_batch(batch, collectors, skipped, where)
            bar.update(len(batch))
    return [collector.result() for collector in collectors], skipped


def predict_batch(
    batch: list[data.Example], collectors: list[Collector], skipped: list[dict], where: str
) -> None:
    ready = []
    for example in batch:
        if isinstance(example.content, str):
            skipped.append({"path": example.uri, "reason": example.content})
        elif not example.label:
            skipped.append({"path": example.uri, "reason": "no label"})
        else:
            ready.append(example)
    for collector in collectors:
        check_labels({example.label for example in ready}, collector.classifier, where)
    todo = list(range(len(ready)))
    scored: list[dict[int, np.ndarray]] = []
    for collector in collectors:
        results = score(collector.classifier, [ready[i].content for i in todo])
        rows, kept = {}, []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, str):
                skipped.append({"path": ready[i].uri, "reason": result})
            else:
                rows[i] = result
                kept.append(i)
        scored.append(rows)
        todo = kept
    for i in todo:
        for collector, rows in zip(collectors, scored, strict=True):
            collector.add(ready[i], rows[i])


def score(classifier: models.Classifier, images: list[bytes]) -> list[np.ndarray | str]:
    """Probabilities per image, or why the model could not decode it. A batch that fails is
    retried image by image, so one bad file costs only itself."""
    if not images:
        return []
    try:
        return list(classifier.scores(images))
    except models.InvalidImage as error:
        if len(images) == 1:
            return [str(error)]
    return [score(classifier, [image])[0] for image in images]


def check_labels(labels: Iterable[str], classifier: models.Classifier, where: str) -> None:
    """UnknownClasses naming the labels of `where` that `classifier` has no class for."""
    unknown = sorted(set(labels) - set(classifier.index))
    if not unknown:
        return
    known = classifier.class_names
    shown = ", ".join(known[:NAMES_SHOWN]) + (
        f", ... ({len(known)} in all)" if len(known) > NAMES_SHOWN else ""
    )
    raise UnknownClasses(
        f"{where} has {len(unknown)} class(es) the model {classifier.source.spec} does not "
        f"know: {', '.join(unknown[:NAMES_SHOWN])} (its classes: {shown}); evaluate on images "
        "of the model's classes only (remove or rename those class folders or manifest rows) "
        "or use a model trained with them"
    )


def short_name(uri: str) -> str:
    """The class folder and file name of a path or URL, for captions."""
    return "/".join(uri.rstrip("/").split("/")[-2:])
