"""SGDS rounds (Kim et al. 2025): at the start of each round a search fills the replay buffer (with
TRUE rewards), on the target in round 1 and on the auxiliary energy E - alpha * novelty(x) later;
then, from round 2 on, the learner (and the novelty predictor) is re-initialised, log Z kept.

The novelty is random-network distillation (`search.novelty`): its predictor is fitted on the
terminal states of each iteration's batch (`observe`; config key rnd_data: every fresh batch, or the
learner's own samples only, as SGDS), so the next round's search is pushed toward what the learner
has not produced."""
from __future__ import annotations

import torch

from ..search import make_rnd
from .search_phase import SearchProgress, run_search, run_sharded_search


class SearchRounds:
    """The searches and re-initialisations of a run's rounds, and the novelty model (see module)."""

    def __init__(self, target, cfg, sampler, ctx=None) -> None:
        self.target, self.cfg, self.ctx = target, cfg, ctx
        self.rnd = None
        if cfg.rnd_alpha > 0:
            p = sampler.log_Z
            self.rnd = make_rnd(target, width=cfg.rnd_width, lr=cfg.rnd_lr,
                                input_scale=sampler.reference.sigma).to(device=p.device, dtype=p.dtype)
        self.log: list[dict] = []
        self.progress: SearchProgress | None = None   # a search stopped between blocks (checkpoints keep it)

    def fits_novelty(self, r: int, on_policy: bool) -> bool:
        """Whether a fresh batch of round r fits the novelty predictor: only a later round's search
        uses it, so the last round skips the fit (the searches see the same predictor; the cost of an
        EGNN predictor on a molecule is most of an iteration's); rnd_data=on_policy fits it on the
        learner's own batches only."""
        return (self.rnd is not None and r + 1 < self.cfg.rounds
                and (on_policy or self.cfg.rnd_data == "fresh"))

    def observe(self, terminal: torch.Tensor) -> None:
        """One fitting step of the novelty predictor on a batch's terminal states (where
        `fits_novelty` says so)."""
        self.rnd.fit(terminal.detach(), steps=1)

    def start(self, r: int, learner, buffer, after_block=None, show: bool = False) -> dict | None:
        """Round r's search (its summary row, or None without a searcher) and re-initialisation.
        `after_block(progress)` runs between the search's blocks (a checkpoint, a signal check)."""
        cfg, row = self.cfg, None
        if cfg.searcher != "none":
            p = learner.sampler.log_Z
            progress = self.progress if self.progress is not None and self.progress.round == r else None

            def keep(prog: SearchProgress) -> None:
                self.progress = prog
                if after_block is not None:
                    after_block(prog)
            kw = dict(dtype=p.dtype, device=p.device, progress=progress, round=r, after_block=keep, show=show)
            if (cfg.shards or 1) > 1:   # blocks on their own streams, shared out among the processes
                res = run_sharded_search(cfg, self.target, self.rnd if r > 0 else None, self.ctx, **kw)
            else:
                res = run_search(cfg, self.target, self.rnd if r > 0 else None, **kw)
            self.progress = None
            stored = buffer.add(res.x, -res.energy)
            row = {"round": r + 1, **res.info, "stored": stored, "evicted": buffer.last_evicted,
                   "log_Z_hat": res.log_Z_hat}
            self.log.append(row)
            if r == 0 and cfg.log_Z_from_searcher and res.log_Z_hat is not None:
                with torch.no_grad():
                    learner.sampler.log_Z.fill_(res.log_Z_hat)
                learner.warm_start_log_Z = False
        if r > 0 and cfg.reinit:
            learner.reinitialise()
            if self.rnd is not None:
                self.rnd.reset()
        return row

    def state_dict(self) -> dict:
        return {"search_log": self.log,
                "search_progress": None if self.progress is None else self.progress.state_dict(),
                "rnd": None if self.rnd is None else {"net": self.rnd.state_dict(),
                                                      "optimizer": self.rnd.optimizer.state_dict()}}

    def load_state_dict(self, state: dict) -> None:
        self.log = list(state.get("search_log", []))
        prog = state.get("search_progress")
        self.progress = None if prog is None else SearchProgress.from_state(prog)
        if self.rnd is not None and state.get("rnd") is not None:
            self.rnd.load_state_dict(state["rnd"]["net"])
            self.rnd.optimizer.load_state_dict(state["rnd"]["optimizer"])


__all__ = ["SearchRounds"]
