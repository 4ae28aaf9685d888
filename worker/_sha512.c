/* The worker's hot loop in C: SHA-512 applied to a 64-byte digest, over and over.
 *
 * A compact SHA-512 (FIPS 180-4) specialised for that one case: a 64-byte message always
 * pads to a single 128-byte block whose second half is constant, so each iteration is one
 * compression from the initial hash value, with no buffering, no length bookkeeping and no
 * byte shuffling between iterations (the state stays in 64-bit words).
 *
 * One chain is serial: each round waits for the one before, so a single job cannot go much
 * faster than its rounds' dependency chain. Independent jobs can: rehash_lanes() advances up
 * to eight chains at once in the 64-bit lanes of one AVX-512 register set (native 64-bit
 * rotates), chosen at run time when the CPU has AVX-512F; elsewhere it runs the chains one
 * after the other with the scalar code. Written with GCC/Clang vector extensions, so the
 * same source also builds where there is no AVX-512.
 *
 * It needs nothing but a C compiler; the GIL is released while it runs. worker/compute.py
 * falls back to hashlib when this module is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const uint64_t K[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL,
};

static const uint64_t H0[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

/* h: the previous digest as 8 big-endian words; replaced by SHA-512 of those 64 bytes. */
static void sha512_of_digest(uint64_t h[8])
{
    uint64_t w[80];
    int i;
    for (i = 0; i < 8; i++)
        w[i] = h[i];
    w[8] = 0x8000000000000000ULL;           /* the padding bit right after 64 bytes */
    for (i = 9; i < 15; i++)
        w[i] = 0;
    w[15] = 512;                            /* message length in bits */
    for (i = 16; i < 80; i++) {
        uint64_t s0 = ROR(w[i - 15], 1) ^ ROR(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = ROR(w[i - 2], 19) ^ ROR(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint64_t a = H0[0], b = H0[1], c = H0[2], d = H0[3];
    uint64_t e = H0[4], f = H0[5], g = H0[6], k = H0[7];
    for (i = 0; i < 80; i++) {
        uint64_t t1 = k + (ROR(e, 14) ^ ROR(e, 18) ^ ROR(e, 41)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint64_t t2 = (ROR(a, 28) ^ ROR(a, 34) ^ ROR(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] = H0[0] + a; h[1] = H0[1] + b; h[2] = H0[2] + c; h[3] = H0[3] + d;
    h[4] = H0[4] + e; h[5] = H0[5] + f; h[6] = H0[6] + g; h[7] = H0[7] + k;
}

#define LANES 8

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_LANES 1
typedef uint64_t v8 __attribute__((vector_size(64)));
#define VROR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#define V(x) ((v8){0} + (uint64_t)(x))
#define ROUND(a, b, c, d, e, f, g, h, i) { \
    v8 t1 = h + (VROR(e, 14) ^ VROR(e, 18) ^ VROR(e, 41)) + (g ^ (e & (f ^ g))) + K[i] + w[i]; \
    d += t1; \
    h = t1 + (VROR(a, 28) ^ VROR(a, 34) ^ VROR(a, 39)) + ((a & b) | (c & (a | b))); }

/* s[word][lane]: eight chains, each advanced `times` iterations. */
__attribute__((target("avx512f")))
static void lanes_avx512(uint64_t s[8][LANES], long long times)
{
    v8 h[8], w[80];
    int i;
    for (i = 0; i < 8; i++)
        memcpy(&h[i], s[i], sizeof(v8));
    for (long long n = 0; n < times; n++) {
        for (i = 0; i < 8; i++)
            w[i] = h[i];
        w[8] = V(0x8000000000000000ULL);
        for (i = 9; i < 15; i++)
            w[i] = V(0);
        w[15] = V(512);
        for (i = 16; i < 80; i++)
            w[i] = w[i - 16] + (VROR(w[i - 15], 1) ^ VROR(w[i - 15], 8) ^ (w[i - 15] >> 7))
                   + w[i - 7] + (VROR(w[i - 2], 19) ^ VROR(w[i - 2], 61) ^ (w[i - 2] >> 6));
        v8 a = V(H0[0]), b = V(H0[1]), c = V(H0[2]), d = V(H0[3]);
        v8 e = V(H0[4]), f = V(H0[5]), g = V(H0[6]), k = V(H0[7]);
        for (i = 0; i < 80; i += 8) {
            ROUND(a, b, c, d, e, f, g, k, i);     ROUND(k, a, b, c, d, e, f, g, i + 1);
            ROUND(g, k, a, b, c, d, e, f, i + 2); ROUND(f, g, k, a, b, c, d, e, i + 3);
            ROUND(e, f, g, k, a, b, c, d, i + 4); ROUND(d, e, f, g, k, a, b, c, i + 5);
            ROUND(c, d, e, f, g, k, a, b, i + 6); ROUND(b, c, d, e, f, g, k, a, i + 7);
        }
        h[0] = a + H0[0]; h[1] = b + H0[1]; h[2] = c + H0[2]; h[3] = d + H0[3];
        h[4] = e + H0[4]; h[5] = f + H0[5]; h[6] = g + H0[6]; h[7] = k + H0[7];
    }
    for (i = 0; i < 8; i++)
        memcpy(s[i], &h[i], sizeof(v8));
}

static int vector_lanes(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#else
#define HAVE_LANES 0
static int vector_lanes(void) { return 0; }
#endif

static void load_words(const unsigned char *p, uint64_t h[8])
{
    for (int i = 0; i < 8; i++) {
        h[i] = 0;
        for (int j = 0; j < 8; j++)
            h[i] = (h[i] << 8) | p[8 * i + j];
    }
}

static void store_words(const uint64_t h[8], unsigned char *p)
{
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            p[8 * i + j] = (unsigned char)(h[i] >> (56 - 8 * j));
}

PyDoc_STRVAR(rehash_doc,
"rehash(digest, times) -> bytes\n\n"
"Apply SHA-512 `times` times to a 64-byte digest; the result is bit-identical to\n"
"repeating hashlib.sha512(digest).digest().");

static PyObject *rehash(PyObject *self, PyObject *args)
{
    Py_buffer digest;
    long long times;
    uint64_t h[8];
    unsigned char out[64];

    if (!PyArg_ParseTuple(args, "y*L:rehash", &digest, &times))
        return NULL;
    if (digest.len != 64 || times < 0) {
        PyBuffer_Release(&digest);
        PyErr_SetString(PyExc_ValueError, "rehash: a 64-byte digest and times >= 0");
        return NULL;
    }
    load_words(digest.buf, h);
    PyBuffer_Release(&digest);
    Py_BEGIN_ALLOW_THREADS
    for (long long n = 0; n < times; n++)
        sha512_of_digest(h);
    Py_END_ALLOW_THREADS
    store_words(h, out);
    return PyBytes_FromStringAndSize((const char *)out, 64);
}

PyDoc_STRVAR(rehash_lanes_doc,
"rehash_lanes(digests, times) -> bytes\n\n"
"Like rehash() for 1 to 8 digests at once, concatenated (64 bytes each): every one is\n"
"rehashed `times` times; the results come back concatenated in the same order.");

static int use_vector = 0;

static PyObject *rehash_lanes(PyObject *self, PyObject *args)
{
    Py_buffer digests;
    long long times;
    uint64_t s[8][LANES];
    uint64_t h[8];
    unsigned char out[64 * LANES];
    Py_ssize_t n;
    int i, lane;

    if (!PyArg_ParseTuple(args, "y*L:rehash_lanes", &digests, &times))
        return NULL;
    n = digests.len / 64;
    if (digests.len % 64 != 0 || n < 1 || n > LANES || times < 0) {
        PyBuffer_Release(&digests);
        PyErr_SetString(PyExc_ValueError, "rehash_lanes: 1 to 8 digests of 64 bytes, times >= 0");
        return NULL;
    }
    memset(s, 0, sizeof(s));
    for (lane = 0; lane < n; lane++) {
        load_words((const unsigned char *)digests.buf + 64 * lane, h);
        for (i = 0; i < 8; i++)
            s[i][lane] = h[i];
    }
    PyBuffer_Release(&digests);
    Py_BEGIN_ALLOW_THREADS
#if HAVE_LANES
    if (use_vector && n > 1)
        lanes_avx512(s, times);
    else
#endif
    for (lane = 0; lane < n; lane++) {
        for (i = 0; i < 8; i++)
            h[i] = s[i][lane];
        for (long long k = 0; k < times; k++)
            sha512_of_digest(h);
        for (i = 0; i < 8; i++)
            s[i][lane] = h[i];
    }
    Py_END_ALLOW_THREADS
    for (lane = 0; lane < n; lane++) {
        for (i = 0; i < 8; i++)
            h[i] = s[i][lane];
        store_words(h, out + 64 * lane);
    }
    return PyBytes_FromStringAndSize((const char *)out, 64 * n);
}

static PyMethodDef methods[] = {
    {"rehash", rehash, METH_VARARGS, rehash_doc},
    {"rehash_lanes", rehash_lanes, METH_VARARGS, rehash_lanes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "worker._sha512",
    "Iterated SHA-512 of a 64-byte digest, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__sha512(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    use_vector = vector_lanes() != 0;
    if (PyModule_AddIntConstant(m, "LANES", LANES) < 0
            || PyModule_AddIntConstant(m, "VECTOR", use_vector) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
