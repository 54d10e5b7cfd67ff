/* The planner's C backward pass (agent/planner/_vi.c) as a program, for a machine the tests
 * cannot run Python on: tests/agent/test_kernel_c_aarch64.py builds it for aarch64 and runs it
 * under qemu on real and random kernels, and natively, and compares the bits.
 *
 * Input (stdin): the pass's struct as tests/agent/vi_blob.py packs it, every pointer field
 * zeroed, then per pointer field its offset in the struct and its array's bytes; the driver
 * gives each array a buffer, writes its address into the struct, sets the drop-off product to
 * plain_gemv below (numpy's BLAS is not there: the same deterministic sums on every machine)
 * and runs nagashi_backward. Output (stdout): its return code, then every buffer as it is
 * after the pass, in the input's order. Little-endian, 64-bit sizes (LP64 on both machines:
 * the struct is 8-byte fields alone, so its layout is the same). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int read_all(void *dst, size_t n) { return fread(dst, 1, n, stdin) == n; }

static int fail(const char *what) {
    fprintf(stderr, "vi_driver: %s\n", what);
    return 2;
}

int main(void) {
    uint64_t size, n_arrays, gemv_at;
    if (!read_all(&size, 8) || !read_all(&n_arrays, 8) || !read_all(&gemv_at, 8))
        return fail("short header");
    if (size != sizeof(Pass)) return fail("the struct's size is not this build's");
    Pass p;
    if (!read_all(&p, sizeof p)) return fail("short struct");
    void **bufs = calloc(n_arrays, sizeof *bufs);
    uint64_t *lens = calloc(n_arrays, sizeof *lens);
    if (bufs == NULL || lens == NULL) return fail("out of memory");
    for (uint64_t i = 0; i < n_arrays; i++) {
        uint64_t at;
        if (!read_all(&at, 8) || !read_all(&lens[i], 8)) return fail("short array header");
        if (at + 8 > sizeof p) return fail("a pointer outside the struct");
        bufs[i] = aligned_alloc(64, (lens[i] + 64) & ~(uint64_t)63);
        if (bufs[i] == NULL) return fail("out of memory");
        if (!read_all(bufs[i], lens[i])) return fail("short array");
        memcpy((char *)&p + at, &bufs[i], sizeof bufs[i]);
    }
    gemv_fn g = plain_gemv;
    memcpy((char *)&p + gemv_at, &g, sizeof g);
    int64_t rc = nagashi_backward(&p);
    fwrite(&rc, 8, 1, stdout);
    for (uint64_t i = 0; i < n_arrays; i++) fwrite(bufs[i], 1, lens[i], stdout);
    return fflush(stdout) == 0 ? 0 : fail("write failed");
}
