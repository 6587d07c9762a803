"""manet_text (the default space for text datasets): MANet over sequences of token ids.

    token ids → embedding → 0–3 stages of 1-D conv blocks, each with an attention slot
              → global pool → fully-connected head (relu | sigmoid | tanh) → logits

With no stage and average pooling this is fastText: the mean of the tokens' embeddings
(pads excluded) into a linear layer, a bag-of-words model as fast as a text network gets
and what a TF-IDF + logistic regression baseline expresses; the stages add what an
n-gram bag cannot (order, attention over the text).

A sequence of L tokens is a 1×L map (``nas.model``), so the attention family is the one
the image spaces use: softmax, sigmoid, sigmoid_norm, MANet's convolutional (Q/K/V from
k-wide convs) and pooling (keys/values from an s-wide pooled sequence) self-attention.

Parameters (names are stable; a name always has the same choices):

- ``embed.width`` (the embedding's dimensions), ``n_stages`` 0–3 (1–3 before 0 was
  added: a study's stored values all replay), and with stages ``act`` and ``norm`` for
  the whole network.
- per stage slot ``s0``..``s2`` (sampled only when the slot is used — conditional, so use
  ``TPESampler(multivariate=True, group=True)``): ``block``, ``width``, ``depth``,
  ``kernel`` (3, 5 or 7 tokens); ``attn.kind`` (none or one of five ops) and, with
  attention, ``attn.heads``, ``attn.head_dim``, ``attn.pos``, ``attn.kernel``
  (manet_conv), ``attn.pool_stride`` (manet_pool); ``down`` (all but the last stage;
  ``none`` is a choice: short texts may not want halving).
- ``pool`` (global pooling); ``fc.layers`` 0–2 and, with layers, ``fc.width``,
  ``fc.act``, ``fc.dropout``.

A search's first trials are ``STARTING_POINTS`` (below): the bag with attention pooling,
then the same with a separable conv stage.

Mapping rules instead of rejection (see ``search_spaces._common``): a downsample of a
sequence shorter than 2 becomes ``none``; attention that does not fit the sequence or the
attention memory budget is mapped by ``fit_attention`` (a pool stride over the length is
capped at it, ``relbias`` with pooled keys becomes ``learned``, over-budget attention
halves its heads, then pools its keys). The default budget holds 4 heads of full
attention up to L = 1024; longer sequences get pooled keys.
"""

from __future__ import annotations

import optuna

from nas.model import ArchSpec, AttentionSpec, HeadSpec, InputSpec, StageSpec, StemSpec, Task
from search_spaces._common import after_downsample, downsample_rule, fit_attention

# nas.search._spaces reads these: the task kinds this space builds networks for, and the task
# `python -m nas.space manet_text` describes and samples it on (AG News' shape).
TASK_KINDS = ("text",)
EXAMPLE_TASK = Task("ag_news", "text", 1, 1, 1, classes=4, length=64, vocab_size=20_000)

ATTENTION_KINDS = ("none", "softmax", "sigmoid", "sigmoid_norm", "manet_conv", "manet_pool")
DOWNSAMPLES = ("none", "max", "avg", "conv", "attention")
GLOBAL_POOLS = ("max", "avg", "avgmax", "attention")
WIDTHS = (32, 64, 96, 128)
# Up to 256: the best networks of a search with 32-128 all took 128, and one of them
# scored 0.855 / 0.867 / 0.866 / 0.864 validation accuracy with 128 / 256 / 384 / 512
# dimensions on the demo corpus (bench/text.py, 2 epochs).
EMBED_WIDTHS = (32, 64, 128, 256)
MAX_STAGES = 3

# What a search trains first (nas.search._spaces), measured with bench/text_networks.py
# (README, "Text classification"): the bag of embeddings with attention pooling, fastText
# with a learned weight per token (as TF-IDF's idf), the best bag on all three corpora,
# trained in seconds (4-minute searches that had not sampled it picked weaker bags); then
# that bag plus a 7-token separable conv added to it (the block's skip at one width), the
# best network measured on the demo corpus at a trial's budget, about 9x the bag's training.
STARTING_POINTS = (
    {"n_stages": 0, "embed.width": 64, "pool": "attention", "fc.layers": 0},
    {
        "n_stages": 1,
        "act": "relu",
        "norm": "batch",
        "embed.width": 128,
        "s0.block": "separable",
        "s0.width": 128,
        "s0.depth": 1,
        "s0.kernel": 7,
        "s0.attn.kind": "none",
        "pool": "attention",
        "fc.layers": 0,
    },
)


def suggest_attention(trial: optuna.Trial, prefix: str, length: int) -> AttentionSpec | None:
    kind = trial.suggest_categorical(f"{prefix}.attn.kind", ATTENTION_KINDS)
    if kind == "none":
        return None
    heads = trial.suggest_categorical(f"{prefix}.attn.heads", (1, 2, 4))
    head_dim = trial.suggest_categorical(f"{prefix}.attn.head_dim", (8, 16, 32))
    position = trial.suggest_categorical(f"{prefix}.attn.pos", ("none", "learned", "relbias"))
    kernel = pool_stride = 1
    if kind == "manet_conv":
        kernel = trial.suggest_categorical(f"{prefix}.attn.kernel", (3, 5, 7))
    if kind == "manet_pool":
        pool_stride = trial.suggest_categorical(f"{prefix}.attn.pool_stride", (2, 4, 8))
    spec = AttentionSpec(kind, heads, head_dim, position, kernel=kernel, pool_stride=pool_stride)
    return fit_attention(spec, length)


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    if task.kind != "text":
        raise ValueError(
            f"space manet_text builds text networks; task {task.name!r} is an {task.kind} "
            "task (use attention_cnn or manet)"
        )
    n_stages = trial.suggest_int("n_stages", 0, MAX_STAGES)
    activation = norm = ""
    if n_stages:
        activation = trial.suggest_categorical("act", ("relu", "gelu"))
        norm = trial.suggest_categorical("norm", ("batch", "group"))
    stem = StemSpec(trial.suggest_categorical("embed.width", EMBED_WIDTHS))
    length = task.length
    stages = []
    for i in range(n_stages):
        p = f"s{i}"
        block = trial.suggest_categorical(f"{p}.block", ("plain", "residual", "separable"))
        width = trial.suggest_categorical(f"{p}.width", WIDTHS)
        depth = trial.suggest_int(f"{p}.depth", 1, 2)
        kernel = trial.suggest_categorical(f"{p}.kernel", (3, 5, 7))
        attention = suggest_attention(trial, p, length)
        down = "none"
        if i < n_stages - 1:
            down = downsample_rule(trial.suggest_categorical(f"{p}.down", DOWNSAMPLES), length)
        stages.append(StageSpec(block, width, depth, kernel, activation, norm, attention, down))
        (length,) = after_downsample(down, length)
    layers = trial.suggest_int("fc.layers", 0, 2)
    head = HeadSpec()
    if layers:
        head = HeadSpec(
            hidden=(trial.suggest_categorical("fc.width", (64, 128, 256)),) * layers,
            activation=trial.suggest_categorical("fc.act", ("relu", "sigmoid", "tanh")),
            dropout=trial.suggest_categorical("fc.dropout", (0.0, 0.1, 0.25, 0.5)),
        )
    return ArchSpec(
        input=InputSpec.for_task(task),
        stem=stem,
        stages=tuple(stages),
        global_pool=trial.suggest_categorical("pool", GLOBAL_POOLS),
        head=head,
        classes=task.classes,
    )
