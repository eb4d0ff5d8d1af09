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
    step = step if isinstance(step, beam.DoFn) else beam.core.CallableWrapperDoFn(step)
    if keep_tags:
        outputs = pcoll | label >> beam.ParDo(step, **kwargs).with_outputs(*tags, main=main)
        return {tag: outputs[tag] for tag in (main, *tags)}
    pairs = pcoll | label >> beam.ParDo(TagsAsPairs(step, main), **kwargs)
    return {tag: pairs | f"{label}_{tag}" >> beam.FlatMap(select, tag=tag) for tag in (main, *tags)}


class TagsAsPairs(beam.DoFn):
    """Runs `step` and emits each of its outputs as (tag, value) on the main output, the main
    output's values tagged `main`."""

    def __init__(self, step: beam.DoFn, main: str):
        self.step = step
        self.main = main

    def setup(self):
        self.step.setup()

    def teardown(self):
        self.step.teardown()

    def process(self, element, *args, **kwargs):
        for output in self.step.process(element, *args, **kwargs) or ():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield output.tag, output.value
            else:
                yield self.main, output


def select(pair: tuple[str, object], tag: str):
    if pair[0] == tag:
        yield pair[1]
