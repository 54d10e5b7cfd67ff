/* The planner's C backward pass (agent/planner/_vi.c) as a program (tests/agent/driver_io.h
 * says what it reads and writes): tests/agent/test_kernel_c_aarch64.py builds it for aarch64
 * and runs it under qemu on real and random kernels, and natively, and compares the bits. The
 * drop-off product is plain_gemv below (numpy's BLAS is not there: the same deterministic
 * sums on every machine). */
#include "driver_io.h"

#include "../../agent/planner/_vi.c"

/* y = A x, each row's products added in order from 0.0 (alpha 1, beta 0: the pass's call) */
static void plain_gemv(int32_t order, int32_t trans, int64_t m, int64_t n, real alpha,
                       const real *a, int64_t lda, const real *x, int64_t incx, real beta,
                       real *y, int64_t incy) {
    (void)trans, (void)alpha, (void)beta, (void)incx, (void)incy;
    for (int64_t i = 0; i < m; i++) {
        real acc = 0.0;
        for (int64_t j = 0; j < n; j++)
            acc += (order == 101 ? a[i * lda + j] : a[j * lda + i]) * x[j];
        y[i] = acc;
    }
}

int main(void) {
    Pass p;
    Arrays a;
    const gemv_fn g = plain_gemv;
    int bad = read_input(&p, sizeof p, &g, sizeof g, &a);
    return bad ? bad : write_output(nagashi_backward(&p), &p, sizeof p, &a);
}
