"""Multi-output steps applied so that each output reaches only its own consumers, also on a
runner that mixes a ParDo's tagged outputs (Beam 2.78's DaskRunner).

Beam 2.78's DaskRunner keys each Dask bag by the transform that produced it, so all of a
ParDo's outputs come out as one bag: each consumer of one output receives the others' elements
too, untagged. On such a runner the step emits (tag, value) pairs on its one output and a
FlatMap per tag selects its own. Elsewhere the step's tagged outputs are used as they are: the
selection passes every element once per tag, which the DirectRunner, the default runner, would
pay per image.
"""

import apache_beam as beam


def apply(pcoll, label: str, step, main: str, tags: tuple[str, ...], keep_tags: bool, **kwargs):
    """{tag: PCollection} of `step` (a DoFn, or a FlatMap function taking **kwargs) over
    `pcoll`, for `main` and each of `tags`; `keep_tags` says whether the runner keeps a ParDo's
    tagged outputs apart."""
    is_dofn = isinstance(step, beam.DoFn)
    if keep_tags:
        transform = beam.ParDo(step, **kwargs) if is_dofn else beam.FlatMap(step, **kwargs)
        outputs = pcoll | label >> transform.with_outputs(*tags, main=main)
        return {tag: outputs[tag] for tag in (main, *tags)}
    if is_dofn:
        transform = beam.ParDo(TagsAsPairs(step, main), **kwargs)
    else:
        transform = beam.FlatMap(call_as_pairs, step=step, main=main, **kwargs)
    pairs = pcoll | label >> transform
    return {tag: pairs | f"{label}_{tag}" >> beam.FlatMap(select, tag=tag) for tag in (main, *tags)}


class TagsAsPairs(beam.DoFn):
    """Runs the DoFn `step` and emits each of its outputs as a (tag, value) pair."""

    def __init__(self, step: beam.DoFn, main: str):
        self.step = step
        self.main = main

    def setup(self):
        self.step.setup()

    def teardown(self):
        self.step.teardown()

    def process(self, element, *args, **kwargs):
        return as_pairs(self.step.process(element, *args, **kwargs), self.main)


def call_as_pairs(element, step, main: str, **kwargs):
    """The FlatMap function `step`'s outputs for `element`, as (tag, value) pairs."""
    return as_pairs(step(element, **kwargs), main)


def as_pairs(outputs, main: str):
    """(tag, value) for each output; the main output's values are tagged `main`."""
    for output in outputs or ():
        if isinstance(output, beam.pvalue.TaggedOutput):
            yield output.tag, output.value
        else:
            yield main, output


def select(pair: tuple[str, object], tag: str):
    if pair[0] == tag:
        yield pair[1]
