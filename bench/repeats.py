"""How much of a study's time went to trials drawn again: the finished trials whose
parameters an earlier trained one (complete or pruned) already had, and their share of
all finished trials' wall time. Since e1ff136 a search prunes such a trial untrained
(user attr ``repeat_of``); a study made before that trained each of them.

    python bench/repeats.py sqlite:///bench/out/ours-60min-seed0-repeats-trained.db ours

Figures (the README's "Searching") are for the studies ``bench/endtoend.py`` ran.
"""

from __future__ import annotations

import argparse
from collections import Counter

import optuna
from optuna.trial import TrialState

from nas.search._results import is_repeat

TRAINED = (TrialState.COMPLETE, TrialState.PRUNED)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("storage")
    p.add_argument("study_name")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study_name, storage=args.storage)
    finished = [t for t in study.get_trials(deepcopy=False, states=TRAINED) if t.duration]
    seen: set[tuple[tuple[str, object], ...]] = set()
    draws: Counter[tuple[tuple[str, object], ...]] = Counter()
    repeats = pruned_untrained = 0
    repeat_seconds = 0.0
    for t in finished:
        key = tuple(sorted(t.params.items()))
        draws[key] += 1
        if is_repeat(t):
            pruned_untrained += 1
        elif key in seen and t.params:
            repeats += 1
            repeat_seconds += t.duration.total_seconds()
        seen.add(key)
    total = sum(t.duration.total_seconds() for t in finished)
    print(f"{len(finished)} finished trials, {len(draws)} distinct parameter sets")
    print(
        f"trained again: {repeats} trials, {repeat_seconds:.0f} s of {total:.0f} s "
        f"({repeat_seconds / max(total, 1e-9):.1%} of all finished trials' time)"
    )
    print(f"pruned as repeats, untrained: {pruned_untrained}")
    print(f"most drawn: {', '.join(str(n) for _, n in draws.most_common(5))} times")


if __name__ == "__main__":
    main()
