/* effnas's CPU kernels: plain C, compiled on first use by effnas/kernels/__init__.py.

   Layout everywhere: activations NHWC float32 (the memory of a channels-last NCHW tensor),
   depthwise weights as (K*K, C). The depthwise weight gradient splits its batch across POSIX
   threads by image; the BN + SiLU and squeeze-excite kernels are single-threaded (they run
   where a micro-batch has one intra-op thread, effnas/lanes.py).
*/
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Depthwise convolution's weight gradient, the plain loop: gw (K*K, C) += sum over images
   [n0, n1) and output positions of gy * the input under each tap, channels [c0, c1).
   x (N,H,W,C), gy (N,Ho,Wo,C). Used for the channels left over by the blocked version below,
   and for kernel sizes other than 3 and 5. */
static void dw_weight_grad_plain(const float *restrict x, const float *restrict gy, float *restrict gw,
                                 int H, int W, int C, int Ho, int Wo, int K, int s, int p, int n0, int n1,
                                 int c0, int c1) {
  for (int n = n0; n < n1; n++)
    for (int oh = 0; oh < Ho; oh++)
      for (int ow = 0; ow < Wo; ow++) {
        const float *restrict g = gy + (((size_t)n * Ho + oh) * Wo + ow) * C;
        for (int kh = 0; kh < K; kh++) {
          int ih = oh * s - p + kh;
          if (ih < 0 || ih >= H) continue;
          for (int kw = 0; kw < K; kw++) {
            int iw = ow * s - p + kw;
            if (iw < 0 || iw >= W) continue;
            const float *restrict xp = x + (((size_t)n * H + ih) * W + iw) * C;
            float *restrict a = gw + (size_t)(kh * K + kw) * C;
            for (int c = c0; c < c1; c++) a[c] += g[c] * xp[c];
          }
        }
      }
}

/* The blocked version: 16 channels at a time (one AVX-512 register, two AVX2 ones), all K*K
   taps accumulated in registers while one pass runs over the output positions, reading the
   input from a zero-padded copy of the image's 16 channels, so no tap needs a bounds check.
   The plain loop above keeps its K*K accumulators in memory and re-reads them for every
   position. */
#define CB 16
typedef float v16 __attribute__((vector_size(CB * sizeof(float))));
typedef float v16u __attribute__((vector_size(CB * sizeof(float)), aligned(sizeof(float))));

static inline __attribute__((always_inline)) void dw_tile(const float *restrict pad, int Wp,
                                                          const float *restrict g, int Ho, int Wo, int C,
                                                          int s, float *restrict out, const int K) {
  v16 acc[K * K];
  for (int t = 0; t < K * K; t++) acc[t] = (v16){0};
  for (int oh = 0; oh < Ho; oh++)
    for (int ow = 0; ow < Wo; ow++) {
      v16 gv = *(const v16u *)(g + ((size_t)oh * Wo + ow) * C);
      const float *xb = pad + ((size_t)oh * s * Wp + (size_t)ow * s) * CB;
#pragma GCC unroll 7
      for (int kh = 0; kh < K; kh++)
#pragma GCC unroll 7
        for (int kw = 0; kw < K; kw++) acc[kh * K + kw] += gv * *(const v16 *)(xb + ((size_t)kh * Wp + kw) * CB);
    }
  for (int t = 0; t < K * K; t++) *(v16u *)(out + (size_t)t * C) += acc[t];
}

/* K is 3 or 5 (dw_job_run sends every other kernel size to the plain loop). */
static void dw_weight_grad_blocked(const float *restrict x, const float *restrict gy, float *restrict gw,
                                   float *restrict pad, int H, int W, int C, int Ho, int Wo, int K, int s,
                                   int p, int n0, int n1, int blocks) {
  int Wp = W + 2 * p;
  for (int n = n0; n < n1; n++)
    for (int b = 0; b < blocks; b++) {
      int cb = b * CB;
      for (int ih = 0; ih < H; ih++) /* the border of `pad` stays zero */
        for (int iw = 0; iw < W; iw++)
          memcpy(pad + ((size_t)(ih + p) * Wp + iw + p) * CB, x + (((size_t)n * H + ih) * W + iw) * C + cb,
                 CB * sizeof(float));
      const float *g = gy + (size_t)n * Ho * Wo * C + cb;
      if (K == 3) /* constant K: the taps unroll and the accumulators live in registers */
        dw_tile(pad, Wp, g, Ho, Wo, C, s, gw + cb, 3);
      else
        dw_tile(pad, Wp, g, Ho, Wo, C, s, gw + cb, 5);
    }
}

typedef struct {
  const float *x, *gy;
  float *gw;
  int H, W, C, Ho, Wo, K, s, p, n0, n1;
} dw_job;

static void *dw_job_run(void *arg) {
  dw_job *j = (dw_job *)arg;
  int blocks = (j->K == 3 || j->K == 5) ? j->C / CB : 0; /* register tiles for 3x3 and 5x5 */
  int Hp = j->H + 2 * j->p, Wp = j->W + 2 * j->p;
  float *pad = NULL;
  if (blocks > 0) {
    size_t bytes = ((size_t)Hp * Wp * CB * sizeof(float) + 63) / 64 * 64;
    pad = aligned_alloc(64, bytes);
    if (pad == NULL) {
      blocks = 0; /* no scratch: the plain loop does all channels */
    } else {
      memset(pad, 0, bytes);
    }
  }
  if (blocks > 0)
    dw_weight_grad_blocked(j->x, j->gy, j->gw, pad, j->H, j->W, j->C, j->Ho, j->Wo, j->K, j->s, j->p, j->n0,
                           j->n1, blocks);
  if (blocks * CB < j->C)
    dw_weight_grad_plain(j->x, j->gy, j->gw, j->H, j->W, j->C, j->Ho, j->Wo, j->K, j->s, j->p, j->n0, j->n1,
                         blocks * CB, j->C);
  free(pad);
  return NULL;
}

/* The depthwise weight gradient over all N images on `threads` threads: thread t sums images
   [N t / T, N (t+1) / T) into its own gw + t * K*K*C (zeroed by the caller); the caller adds
   the partial sums in a fixed order, so the result depends on the thread count only. Returns
   the number of threads used. */
int dw_weight_grad_threads(const float *x, const float *gy, float *gw, int N, int H, int W, int C,
                           int Ho, int Wo, int K, int s, int p, int threads) {
  enum { MAX_THREADS = 64 };
  dw_job jobs[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (threads > N) threads = N > 0 ? N : 1;
  for (int t = 0; t < threads; t++) {
    dw_job j = {x, gy, gw + (size_t)t * K * K * C, H, W, C, Ho, Wo, K, s, p,
                (int)((long)N * t / threads), (int)((long)N * (t + 1) / threads)};
    jobs[t] = j;
  }
  for (int t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], NULL, dw_job_run, &jobs[t]) == 0;
  dw_job_run(&jobs[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(ids[t], NULL);
    else
      dw_job_run(&jobs[t]); /* no thread to be had: do its share here */
  }
  return threads;
}

/* ---- Batch norm (training statistics) fused with SiLU, one thread ---------------------------

   x is (M, C): M = N*H*W positions of a channels-last tensor. PyTorch runs BN and SiLU as five
   full passes forward (statistics, normalise, SiLU's read and write) and eight backward; these
   run three and six: forward a statistics pass and one output pass y = silu(x * a + b'),
   backward a pass that recomputes the SiLU's derivative, writes dz = dy * silu'(z) into dx's
   memory and sums dz and dz * (x - mean), then one pass that turns dz into dx in place. Only
   x is kept for backward (PyTorch keeps x and BN's output). Sums are float over blocks of
   ROWS positions, then double; single-threaded (the trainer uses it where each micro-batch has
   one thread), so the result is the same every run. */
typedef int v16i __attribute__((vector_size(CB * sizeof(int))));
#define ROWS 128

#if defined(__AVX512F__)
#include <immintrin.h>
/* 1 / (1 + e^-z) with AVX-512: e^x = 2^round(x log2 e) (scalef) times a degree-6 polynomial of
   e^g, |g| <= ln2 / 2 (~1e-7 relative), x clamped to [-87, 88]; the reciprocal is rcp14 with one
   Newton step (~1e-8 relative) instead of a division. */
static inline v16 v_sigmoid(v16 z) {
  __m512 x = _mm512_max_ps(_mm512_min_ps(-(__m512)z, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 g = _mm512_mul_ps(_mm512_sub_ps(t, r), _mm512_set1_ps(0.693147180559945309f));
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
  __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, r), _mm512_set1_ps(1.0f));
  __m512 rc = _mm512_rcp14_ps(d);
  rc = _mm512_mul_ps(rc, _mm512_fnmadd_ps(d, rc, _mm512_set1_ps(2.0f)));
  return (v16)rc;
}
#else
static inline v16 v_select(v16i m, v16 a, v16 b) { return (v16)(((v16i)a & m) | ((v16i)b & ~m)); }

/* e^x to ~1e-7 relative: 2^round(x log2 e) from the exponent bits, times a degree-6
   polynomial of e^(f ln 2) for the remainder |f| <= 0.5. x is clamped to [-87, 88]. */
static inline v16 v_exp(v16 x) {
  const v16 lo = (v16){0} - 87.0f, hi = (v16){0} + 88.0f;
  x = v_select(x < lo, lo, x);
  x = v_select(x > hi, hi, x);
  const v16 magic = (v16){0} + 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  v16 t = x * 1.44269504088896341f;
  v16 r = (t + magic) - magic;
  v16 g = (t - r) * 0.693147180559945309f;
  v16 p = 1.0f + g * (1.0f + g * (0.5f + g * (1.0f / 6 + g * (1.0f / 24 + g * (1.0f / 120 + g * (1.0f / 720))))));
  v16i i = __builtin_convertvector(r, v16i);
  v16 scale = (v16)((i + 127) << 23);
  return p * scale;
}

static inline v16 v_sigmoid(v16 z) { return 1.0f / (1.0f + v_exp(-z)); }
#endif

/* channels [c, c + n) of one row, n <= CB; lanes past n read as 0 and are not written */
static inline v16 load_n(const float *p, int n) {
  if (n == CB) return *(const v16u *)p;
  v16 v = {0};
  memcpy(&v, p, (size_t)n * sizeof(float));
  return v;
}
static inline void store_n(float *p, v16 v, int n) {
  if (n == CB)
    *(v16u *)p = v;
  else
    memcpy(p, &v, (size_t)n * sizeof(float));
}

/* Per-channel scratch of both passes, C rounded up to CP (a multiple of CB): 2 x CP doubles
   (zeroed sums) and 4 x CP floats (64-byte aligned vectors of constants). 0, or -1 when out of
   memory (nothing allocated then). */
static int bn_scratch(int CP, double **dsum, float **fs) {
  *dsum = calloc((size_t)2 * CP, sizeof(double));
  *fs = aligned_alloc(64, (size_t)4 * CP * sizeof(float) + 64);
  if (*dsum == NULL || *fs == NULL) {
    free(*dsum);
    free(*fs);
    return -1;
  }
  return 0;
}

/* Forward: y = silu((x - mean) * invstd * w + b); mean, biased var and invstd per channel.
   Returns 0, or -1 when out of memory. */
int bn_silu_forward(const float *restrict x, const float *restrict w, const float *restrict b,
                    float *restrict y, float *restrict mean, float *restrict var, float *restrict invstd, long M,
                    int C, float eps) {
  int CP = (C + CB - 1) / CB * CB;
  double *dsum;
  float *fs;
  if (bn_scratch(CP, &dsum, &fs) != 0) return -1;
  double *dsq = dsum + CP;
  float *shift = fs, *s = fs + CP, *a = fs + 2 * CP;
  /* sums of (x - shift), shift = the first position's value: no cancellation in E[x^2] - E[x]^2 */
  memset(shift, 0, (size_t)CP * sizeof(float));
  if (M > 0) memcpy(shift, x, (size_t)C * sizeof(float));
  for (long m0 = 0; m0 < M; m0 += ROWS) {
    long m1 = m0 + ROWS < M ? m0 + ROWS : M;
    for (int c = 0; c < C; c += CB) {
      int n = C - c < CB ? C - c : CB;
      v16 k = *(const v16 *)(shift + c), vs = {0}, vq = {0};
      for (long m = m0; m < m1; m++) {
        v16 v = load_n(x + m * C + c, n) - k;
        vs += v;
        vq += v * v;
      }
      for (int l = 0; l < n; l++) {
        dsum[c + l] += vs[l];
        dsq[c + l] += vq[l];
      }
    }
  }
  for (int c = 0; c < C; c++) {
    double mu = dsum[c] / (double)M, v = dsq[c] / (double)M - mu * mu;
    if (v < 0) v = 0;
    mean[c] = (float)(shift[c] + mu);
    var[c] = (float)v;
    invstd[c] = (float)(1.0 / __builtin_sqrt(v + eps));
  }
  /* z = x * a + s: a = invstd * w, s = b - mean * a */
  memset(a, 0, (size_t)CP * sizeof(float));
  memset(s, 0, (size_t)CP * sizeof(float));
  for (int c = 0; c < C; c++) {
    a[c] = invstd[c] * w[c];
    s[c] = b[c] - mean[c] * a[c];
  }
  for (long m = 0; m < M; m++)
    for (int c = 0; c < C; c += CB) {
      int n = C - c < CB ? C - c : CB;
      v16 z = load_n(x + m * C + c, n) * *(const v16 *)(a + c) + *(const v16 *)(s + c);
      store_n(y + m * C + c, z * v_sigmoid(z), n);
    }
  free(dsum);
  free(fs);
  return 0;
}

/* Backward: dx, dw (gamma), db (beta) from dy and the forward's x, mean, invstd, w, b. dx may
   not alias x or dy. Returns 0, or -1 when out of memory. */
int bn_silu_backward(const float *restrict dy, const float *restrict x, const float *restrict w,
                     const float *restrict b, const float *restrict mean, const float *restrict invstd,
                     float *restrict dx, float *restrict dw, float *restrict db, long M, int C) {
  int CP = (C + CB - 1) / CB * CB;
  double *dsum;
  float *fs;
  if (bn_scratch(CP, &dsum, &fs) != 0) return -1;
  double *dxm = dsum + CP;
  float *mu = fs, *a = fs + CP, *s = fs + 2 * CP, *k = fs + 3 * CP;
  memset(fs, 0, (size_t)4 * CP * sizeof(float));
  for (int c = 0; c < C; c++) {
    mu[c] = mean[c];
    a[c] = invstd[c] * w[c];
    s[c] = b[c];
  }
  /* pass 1: z = (x - mean) * a + b; dz = dy * sig(z) * (1 + z (1 - sig(z))) -> dx; the sums */
  for (long m0 = 0; m0 < M; m0 += ROWS) {
    long m1 = m0 + ROWS < M ? m0 + ROWS : M;
    for (int c = 0; c < C; c += CB) {
      int n = C - c < CB ? C - c : CB;
      v16 vmu = *(const v16 *)(mu + c), va = *(const v16 *)(a + c), vb = *(const v16 *)(s + c);
      v16 vs = {0}, vx = {0};
      for (long m = m0; m < m1; m++) {
        v16 xm = load_n(x + m * C + c, n) - vmu;
        v16 z = xm * va + vb;
        v16 sg = v_sigmoid(z);
        v16 dz = load_n(dy + m * C + c, n) * sg * (1.0f + z * (1.0f - sg));
        store_n(dx + m * C + c, dz, n);
        vs += dz;
        vx += dz * xm;
      }
      for (int l = 0; l < n; l++) {
        dsum[c + l] += vs[l];
        dxm[c + l] += vx[l];
      }
    }
  }
  /* dx = w invstd (dz - sum(dz)/M - (x - mean) invstd^2 sum(dz (x - mean))/M) */
  float *c1 = s, *c2 = k; /* reused: per-channel constants of pass 2 */
  for (int c = 0; c < C; c++) {
    db[c] = (float)dsum[c];
    dw[c] = (float)(dxm[c] * invstd[c]);
    c1[c] = (float)(dsum[c] / (double)M);
    c2[c] = (float)(dxm[c] / (double)M * invstd[c] * invstd[c]);
  }
  for (long m = 0; m < M; m++)
    for (int c = 0; c < C; c += CB) {
      int n = C - c < CB ? C - c : CB;
      v16 xm = load_n(x + m * C + c, n) - *(const v16 *)(mu + c);
      v16 dz = load_n(dx + m * C + c, n);
      store_n(dx + m * C + c, (dz - *(const v16 *)(c1 + c) - xm * *(const v16 *)(c2 + c)) * *(const v16 *)(a + c), n);
    }
  free(dsum);
  free(fs);
  return 0;
}

/* Squeeze-excite backward's reduction: out[n, c] = sum over positions of a * b, for a and b
   (N, P, C) channels-last, in one pass (PyTorch writes the product a * b out, then sums it).
   One thread; float sums over blocks of ROWS positions, added in double. */
void channel_dot(const float *restrict a, const float *restrict b, float *restrict out, int N, long P, int C) {
  for (int n = 0; n < N; n++) {
    const float *pa = a + (size_t)n * P * C, *pb = b + (size_t)n * P * C;
    for (int c = 0; c < C; c += CB) {
      int k = C - c < CB ? C - c : CB;
      double total[CB] = {0};
      for (long p0 = 0; p0 < P; p0 += ROWS) {
        long p1 = p0 + ROWS < P ? p0 + ROWS : P;
        v16 acc = {0};
        for (long p = p0; p < p1; p++) acc += load_n(pa + p * C + c, k) * load_n(pb + p * C + c, k);
        for (int l = 0; l < k; l++) total[l] += acc[l];
      }
      for (int l = 0; l < k; l++) out[(size_t)n * C + c + l] = (float)total[l];
    }
  }
}
