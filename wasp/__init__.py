"""wasp: WhatsApp sessions on Kubernetes, sharded by slot.

This package is the shared core that the three programs import: the slot
model (`wasp.slots`), what the programs agree on (`wasp.contract`) and the
`wasp` command line (`wasp.cli`). The programs
themselves live in their own top-level folders: `operator/wasp_operator`,
`master/wasp_master` and `worker/wasp_worker`.
"""

# The one place the version is written: the distribution's metadata (hatch), the
# default worker image tag and the chart's appVersion (checked by a test) follow it.
__version__ = "0.1.0"
