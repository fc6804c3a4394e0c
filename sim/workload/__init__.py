"""The workload: every request of a run, generated up front from the spec and the seed.

`generate_requests(workload, horizon_s, seed, replication)` returns a `Requests` record of
parallel arrays (send time, prompt and output tokens, shared-prefix group), sorted by send
time, that the serving kernels consume. The parts live in their own modules: `arrivals` (when
requests are sent) and `lengths` (how long they are), families whose members each keep their
spec and behaviour in one class; `prefixes` (shared system prompts), `service_times` (the
distributions that may replace the engine) and `trace` (replaying real request traces).
"""

from sim.workload.requests import Requests, generate_requests

__all__ = ["Requests", "generate_requests"]
