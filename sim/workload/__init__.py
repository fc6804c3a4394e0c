"""The workload: every request of a run, generated up front from the spec and the seed.

`generate_requests(workload, horizon_s, seed, replication)` returns a `Requests` record of
parallel arrays (send time, prompt and output tokens, shared-prefix group), sorted by send
time, that the serving kernels consume. The families live in their own modules:
`arrivals` (when requests are sent), `lengths` (how long they are), `prefixes` (shared system
prompts) and `trace` (replaying real request traces).
"""

from sim.workload.requests import Requests, generate_requests

__all__ = ["Requests", "generate_requests"]
