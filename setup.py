"""The planner's C backward pass (agent/planner/_vi.c, loaded with ctypes by
agent/planner/kernel_c.py) and its route read-out's walk (agent/planner/_walk.c, by
agent/planner/walk_c.py). Optional: where it cannot be compiled, the install goes on and the
planner runs its numpy path (the same plans, slower)."""

from setuptools import Extension, setup

# the same bits as numpy and Python: no fused multiply-add, no reassociation
SAME_BITS = ["-O2", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension(
            "agent.planner._vi",
            sources=["agent/planner/_vi.c"],
            extra_compile_args=SAME_BITS,
            optional=True,
        ),
        Extension(
            "agent.planner._walk",
            sources=["agent/planner/_walk.c"],
            extra_compile_args=SAME_BITS,
            optional=True,
        ),
    ]
)
