"""Health checks of the real servers: configuration, probes, hysteresis and the scheduler that runs them.

IPVS never checks its dests. lvstop probes each one the configuration matches (tcp, http(s), dns, exec,
agent) beside the poller, in a process of its own with an asyncio loop, and keeps per dest a state (up, down,
unknown) that changes after `fall` failures or `rise` successes in a row.

- config.py: the YAML file (`--health.config`), parsed with a line for every error.
- checks.py: one probe of one dest, per check type.
- state.py: the pure hysteresis and the per-dest view readers get.
- runner.py: which dests each check applies to, the scheduler, the runner, `run_round`, the demo's prober.
- worker.py: the checks' process and the frames between it and the runner.
"""
