"""text_cnn: a fixed text network, the hand design text searches measure their costs by.

    token ids → 256-wide embedding → one 7-token conv block of 64 channels
              → average and max pooled → logits

The best fixed network of ``bench/text_networks.py`` on the docstring corpus with the
``ngrams`` tokenizer (0.8317 test accuracy after 20 epochs, beside a bag of embeddings'
0.8150). A text search's cost limit never falls under its estimated cost
(``nas.search._settings.REFERENCE_DESIGNS``): without that floor, bags of embeddings
trained in 2–4 s set the median and 2× it refused nearly every conv network.
"""

from __future__ import annotations

import optuna

from nas.model import ArchSpec, HeadSpec, InputSpec, StageSpec, StemSpec, Task

TASK_KINDS = ("text",)
EXAMPLE_TASK = Task("ag_news", "text", 1, 1, 1, classes=4, length=64, vocab_size=20_000)


def spec(task: Task) -> ArchSpec:
    return ArchSpec(
        input=InputSpec.for_task(task),
        stem=StemSpec(256),
        stages=(StageSpec("plain", 64, kernel=7),),
        global_pool="avgmax",
        head=HeadSpec(),
        classes=task.classes,
    )


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    """A space with no parameters: every trial is the hand design."""
    return spec(task)
