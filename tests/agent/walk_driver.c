/* The route read-out's walk (agent/planner/_walk.c, nagashi_walk) as a program
 * (tests/agent/driver_io.h says what it reads and writes), for
 * tests/agent/test_kernel_c_aarch64.py: built for aarch64 and run under qemu, and natively, on
 * the walks of real plans, every allowed mask handed over at once. numpy's expm1 loop is not
 * there; the walk calls plain_expm1 below instead, the same few operations on every machine
 * (the test runs the installed walk with the same operations, in Python, to compare). */
#include "driver_io.h"

#include "../../agent/planner/_walk.c"

/* a loop of numpy's ufunc signature: x + x^2/2 + x^3/6 for each element */
static void plain_expm1(char **args, const intptr_t *dims, const intptr_t *steps, void *data) {
    (void)data;
    for (intptr_t i = 0; i < dims[0]; i++) {
        const double x = *(const double *)(args[0] + i * steps[0]);
        *(double *)(args[1] + i * steps[1]) = x * (1.0 + x * (0.5 + x / 6.0));
    }
}

int main(void) {
    Walk w;
    Arrays a;
    const loop_fn f = plain_expm1;
    int bad = read_input(&w, sizeof w, &f, sizeof f, &a);
    return bad ? bad : write_output(nagashi_walk(&w), &w, sizeof w, &a);
}
