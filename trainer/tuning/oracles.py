"""KerasTuner's search algorithms as a registry, each with a time budget and chief reports."""

import time

import keras_tuner

from configs import schema
from trainer.tuning import trials


class BudgetMixin:
    """No new trial once the search has used its time budget (running trials finish).

    The search time is kept in the oracle's saved state, so a resumed search counts the time it
    ran before and not the time it was stopped.
    """

    def __init__(self, *args, budget_s: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_s = budget_s
        self.elapsed_before_s = 0.0
        self.session_start = time.time()
        # The chief of a distributed search runs no trials: its oracle says what the workers do.
        self.announce = False

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.time() - self.session_start

    def populate_space(self, trial_id):
        if self.budget_s is not None and self.elapsed_s() >= self.budget_s:
            print(f"tune: time budget of {self.budget_s / 60:g} min used; no new trials")
            return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if self.announce and trial.status == keras_tuner.engine.trial.TrialStatus.RUNNING:
            print(f"tune: trial {trial.trial_id} started on {tuner_id}", flush=True)
        return trial

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        if self.announce:
            ended = self.trials[trial.trial_id]
            score = (
                f": {trials.objective_label(self.objective)} {ended.score:.4f}"
                if ended.score is not None
                else ""
            )
            print(f"tune: trial {ended.trial_id} {str(ended.status).lower()}{score}", flush=True)

    def get_state(self):
        return {**super().get_state(), "elapsed_s": self.elapsed_s()}

    def set_state(self, state):
        super().set_state(state)
        self.elapsed_before_s = state.get("elapsed_s", 0.0)
        self.session_start = time.time()


class RandomOracle(BudgetMixin, keras_tuner.oracles.RandomSearchOracle):
    pass


class GridOracle(BudgetMixin, keras_tuner.oracles.GridSearchOracle):
    pass


class BayesianOracle(BudgetMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(BudgetMixin, keras_tuner.oracles.HyperbandOracle):
    pass


ORACLES = {
    "random": RandomOracle,
    "grid": GridOracle,
    "bayesian": BayesianOracle,
    "hyperband": HyperbandOracle,
}


def build_oracle(
    tuning: schema.TuningConfig,
    objective: keras_tuner.Objective,
    hyperparameters,
    seed: int,
    epochs: int,
):
    """The oracle of tuning.algorithm; `epochs` is Hyperband's budget when max_epochs is null."""
    common = dict(
        objective=objective,
        hyperparameters=hyperparameters,
        # KerasTuner reads a seed of 0 as "no seed" (random): shift every seed by one.
        seed=seed + 1,
        max_consecutive_failed_trials=tuning.max_consecutive_failed_trials,
        budget_s=tuning.time_budget_minutes * 60 if tuning.time_budget_minutes else None,
    )
    algorithm = tuning.algorithm
    if algorithm == "hyperband":
        oracle = HyperbandOracle(
            max_epochs=tuning.max_epochs or epochs, factor=tuning.factor, **common
        )
        oracle.max_trials = tuning.max_trials  # the base Oracle stops there, as for the others
        return oracle
    if algorithm == "bayesian":
        return BayesianOracle(
            max_trials=tuning.max_trials, num_initial_points=tuning.num_initial_points, **common
        )
    return ORACLES[algorithm](max_trials=tuning.max_trials, **common)
