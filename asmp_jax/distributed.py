"""Multi-process JAX start-up (one process per host).

``initialize()`` calls ``jax.distributed.initialize`` when the job is multi-process:

* ``ASMP_DISTRIBUTED=1`` (set on every worker by ``python -m asmp_jax.tpu_submit``): on Cloud TPU
  VMs JAX finds the coordinator, process count and id from the VM metadata by itself;
* ``ASMP_COORDINATOR=host:port`` with ``ASMP_NUM_PROCESSES`` and ``ASMP_PROCESS_ID`` (GPU clusters
  without a scheduler JAX knows, or several local processes in tests). On CPU the collectives
  default to gloo (``ASMP_CPU_COLLECTIVES`` to change it);
* Cloud TPU / GKE environment variables (``TPU_WORKER_HOSTNAMES``,
  ``MEGASCALE_COORDINATOR_ADDRESS``).

Otherwise training runs as a single process on the local devices.
"""

from __future__ import annotations

import os

import jax


def initialize() -> None:
  coordinator = os.environ.get("ASMP_COORDINATOR")
  if coordinator:
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    if platforms in ("", "cpu"):
      jax.config.update("jax_cpu_collectives_implementation",
                        os.environ.get("ASMP_CPU_COLLECTIVES", "gloo"))
    try:
      num_processes = int(os.environ["ASMP_NUM_PROCESSES"])
      process_id = int(os.environ["ASMP_PROCESS_ID"])
    except (KeyError, ValueError) as e:
      raise ValueError("ASMP_COORDINATOR is set: ASMP_NUM_PROCESSES and ASMP_PROCESS_ID must be "
                       "integers too") from e
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif (os.environ.get("ASMP_DISTRIBUTED") == "1" or os.environ.get("TPU_WORKER_HOSTNAMES")
        or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")):
    jax.distributed.initialize()
