"""The SimPy side: sites, GPU pools, links, serving pools and the control plane."""

from sim.world.serving import ServingPool
from sim.world.world import World

__all__ = ["ServingPool", "World"]
