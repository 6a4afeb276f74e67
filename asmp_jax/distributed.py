"""Multi-process JAX start-up.

On Cloud TPU VMs ``jax.distributed.initialize()`` finds the coordinator by itself. Elsewhere (GPU
clusters, or several local processes in tests) set ``ASMP_COORDINATOR=host:port``,
``ASMP_NUM_PROCESSES`` and ``ASMP_PROCESS_ID``. With none of these and no TPU, training runs as a
single process.
"""

from __future__ import annotations

import os

import jax


def initialize() -> None:
  coordinator = os.environ.get("ASMP_COORDINATOR")
  if coordinator:
    if os.environ.get("ASMP_CPU_COLLECTIVES", "gloo") and jax.config.jax_platforms in (None, "", "cpu"):
      jax.config.update("jax_cpu_collectives_implementation",
                        os.environ.get("ASMP_CPU_COLLECTIVES", "gloo"))
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["ASMP_NUM_PROCESSES"]),
                               process_id=int(os.environ["ASMP_PROCESS_ID"]))
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"):
    jax.distributed.initialize()
