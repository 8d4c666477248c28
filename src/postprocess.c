/* Per-pixel post-processing kernels of the node's camera-rate hot path (issue 11), loaded with
 * ctypes by xnet_ros/native.py. Plain C (no Python API: one build serves every CPython), each a
 * single pass that writes every output byte once, straight into the message buffer.
 *
 * They reproduce the numpy reference in xnet_ros/geometry.py and xnet_ros/outputs.py bit for
 * bit (test/xnet_ros/test_native.py): IEEE float32 arithmetic in the same order, so the build
 * must not contract or reorder it (-ffp-contract=off, no -ffast-math; see CMakeLists.txt).
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XNET_API __attribute__((visibility("default")))

/* numpy's np.float32(np.nan): every invalid point's x, y and z */
static const uint32_t QUIET_NAN_BITS = 0x7fc00000u;

XNET_API int xnet_postprocess_version(void) { return 4; }  /* bump with every signature change */

/* ---- Large calls in two halves of rows: the caller's thread and one helper thread.
 * Below split_min_bytes of output (native.SPLIT_MIN_BYTES), waking a second thread costs about
 * what it saves (2-core VM: 640x480 outputs 10% faster split, 1920x1080 25%). The
 * helper is started on first use and waits on a condition variable; one caller at a time hands
 * it a half (a caller that finds it taken runs both halves itself). Each half writes its own
 * rows only, so the bytes are the same split or not. */
typedef int64_t (*rows_fn)(const void *args, int64_t begin, int64_t end);

static struct {
  pthread_mutex_t mutex;
  pthread_cond_t wake, done;
  int started, busy, pending;
  int64_t calls;  /* calls split so far */
  rows_fn fn;
  const void *args;
  int64_t begin, end, result;
} helper = {.mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
            .done = PTHREAD_COND_INITIALIZER};

static int split_threads = 2;
static int64_t split_min_bytes = 1 << 20;

/* 1 or 2 threads per call, from how many output bytes on (tests, benchmarks, XNET_NATIVE_THREADS
 * in native.py); returns the previous thread count. */
XNET_API int xnet_set_split(int threads, int64_t min_bytes) {
  pthread_mutex_lock(&helper.mutex);
  const int previous = split_threads;
  split_threads = threads > 1 ? 2 : 1;
  split_min_bytes = min_bytes;
  pthread_mutex_unlock(&helper.mutex);
  return previous;
}

/* How many calls ran in two halves so far (tests: that the split path ran). */
XNET_API int64_t xnet_split_calls(void) {
  pthread_mutex_lock(&helper.mutex);
  const int64_t calls = helper.calls;
  pthread_mutex_unlock(&helper.mutex);
  return calls;
}

static void *helper_main(void *unused) {
  (void)unused;
  pthread_mutex_lock(&helper.mutex);
  for (;;) {
    while (!helper.pending) pthread_cond_wait(&helper.wake, &helper.mutex);
    pthread_mutex_unlock(&helper.mutex);
    const int64_t result = helper.fn(helper.args, helper.begin, helper.end);
    pthread_mutex_lock(&helper.mutex);
    helper.result = result;
    helper.pending = 0;
    pthread_cond_signal(&helper.done);
  }
  return NULL;
}

static void helper_after_fork(void) { /* the child has no helper thread: start another */
  pthread_mutex_init(&helper.mutex, NULL);
  pthread_cond_init(&helper.wake, NULL);
  pthread_cond_init(&helper.done, NULL);
  helper.started = helper.busy = helper.pending = 0;
}

/* Whether a call with this much output is to be split (if the helper is free then). */
static int split_wanted_locked(int64_t out_bytes) {
  return split_threads > 1 && out_bytes >= split_min_bytes;
}

static int split_wanted(int64_t out_bytes) {
  pthread_mutex_lock(&helper.mutex);
  const int wanted = split_wanted_locked(out_bytes);
  pthread_mutex_unlock(&helper.mutex);
  return wanted;
}

/* Caller holds the mutex. 1 when the helper runs (or now started), 0 when it cannot. */
static int helper_ready(void) {
  if (helper.started) return helper.started > 0;
  pthread_attr_t attr;
  pthread_t thread;
  helper.started = -1;
  if (pthread_attr_init(&attr) != 0) return 0;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&thread, &attr, helper_main, NULL) == 0) {
    helper.started = 1;
    pthread_atfork(NULL, NULL, helper_after_fork);
  }
  pthread_attr_destroy(&attr);
  return helper.started > 0;
}

/* fn(args, 0, rows): in two halves on two threads when the output is large; the sum of what
 * the halves return. */
static int64_t run_rows(rows_fn fn, const void *args, int64_t rows, int64_t out_bytes) {
  int split = 0;
  if (rows >= 2) {
    pthread_mutex_lock(&helper.mutex);
    if (split_wanted_locked(out_bytes) && !helper.busy && helper_ready()) {
      helper.busy = helper.pending = split = 1;
      helper.calls++;
      helper.fn = fn, helper.args = args, helper.begin = rows / 2, helper.end = rows;
      pthread_cond_signal(&helper.wake);
    }
    pthread_mutex_unlock(&helper.mutex);
  }
  if (!split) return fn(args, 0, rows);
  int64_t result = fn(args, 0, rows / 2);
  pthread_mutex_lock(&helper.mutex);
  while (helper.pending) pthread_cond_wait(&helper.done, &helper.mutex);
  result += helper.result;
  helper.busy = 0;
  pthread_mutex_unlock(&helper.mutex);
  return result;
}

/* 1 when every one of the n values is finite and above threshold (compared as doubles, as
 * numpy's float(min) > threshold), else 0; 0 for n = 0. Branch-free, so it vectorizes. */
XNET_API int xnet_all_above(const float *values, int64_t n, double threshold) {
  int ok = n > 0;
  for (int64_t k = 0; k < n; k++) ok &= ((double)values[k] > threshold) & (values[k] < INFINITY);
  return ok;
}

static inline int valid_depth(float z, int has_max, float max_range) {
  return z > 0.0f && z < INFINITY && (!has_max || z <= max_range);
}

static inline uint32_t label_at(const uint8_t *row, ptrdiff_t col, int label_bytes) {
  if (label_bytes == 1) return row[col];
  uint16_t value;
  memcpy(&value, row + 2 * col, 2);
  return value;
}

/* Bytes per point: x, y, z, then the colour word and the label when present. */
static inline int64_t point_bytes(int has_rgb, int label_bytes) {
  return 12 + 4 * has_rgb + (label_bytes ? 4 : 0);
}

/* Valid points (z > 0, finite, <= max_range when has_max) among every stride-th pixel. */
XNET_API int64_t xnet_cloud_count(const uint8_t *depth, ptrdiff_t depth_row, int64_t rows,
                                  int64_t cols, int64_t stride, int has_max, float max_range) {
  int64_t valid = 0;
  for (int64_t i = 0; i < rows; i++) {
    const float *z = (const float *)(depth + i * stride * depth_row);
    for (int64_t j = 0; j < cols; j++) valid += valid_depth(z[j * stride], has_max, max_range);
  }
  return valid;
}

/* One row of points; the flags are compile-time constants in each caller below, so every
 * combination gets its own branch-free loop. Invalid z becomes NaN before the products, as in
 * numpy (x and y inherit it the same way). */
static inline __attribute__((always_inline)) uint8_t *cloud_row(
    const float *z_row, int64_t cols, int64_t stride, const float *col_factor, float fy,
    int has_max, float max_range, const uint8_t *rgb_row, int has_rgb, const uint8_t *label_row,
    int label_bytes, int dense, uint8_t *p, const uint8_t *end, int64_t *valid) {
  float nan;
  memcpy(&nan, &QUIET_NAN_BITS, 4);
  for (int64_t j = 0; j < cols; j++) {
    float z = z_row[j * stride];
    const int ok = valid_depth(z, has_max, max_range);
    *valid += ok;
    if (dense && (!ok || p + point_bytes(has_rgb, label_bytes) > end)) continue;
    z = ok ? z : nan;
    const float xyz[3] = {z * col_factor[j], z * fy, z};
    memcpy(p, xyz, 12);
    p += 12;
    if (has_rgb) {
      const uint8_t *px = rgb_row + 3 * j * stride;
      const uint32_t word = (uint32_t)px[0] << 16 | (uint32_t)px[1] << 8 | px[2];
      memcpy(p, &word, 4);
      p += 4;
    }
    if (label_bytes) {
      const uint32_t label = label_at(label_row, j * stride, label_bytes);
      memcpy(p, &label, 4);
      p += 4;
    }
  }
  return p;
}

typedef struct {
  const uint8_t *depth, *rgb, *labels;
  ptrdiff_t depth_row, rgb_row, labels_row;
  int64_t cols, stride;
  const float *col_factor, *row_factor;
  int has_max, has_rgb, label_bytes, dense;
  float max_range;
  int64_t rows;
  uint8_t *out, *second;  /* second: a dense cloud's second half of rows starts there */
  const uint8_t *end;
} cloud_args;

#define CLOUD_ROWS(HAS_RGB, LABEL_BYTES, DENSE)                                                 \
  for (int64_t i = begin; i < end; i++) {                                                      \
    p = cloud_row((const float *)(a->depth + i * a->stride * a->depth_row), a->cols, a->stride,  \
                  a->col_factor, a->row_factor[i], a->has_max, a->max_range,                   \
                  a->rgb ? a->rgb + i * a->stride * a->rgb_row : NULL, HAS_RGB,                \
                  a->labels ? a->labels + i * a->stride * a->labels_row : NULL, LABEL_BYTES,   \
                  DENSE, p, limit, &valid);                                                    \
  }

/* Rows [begin, end) of the grid. An organized cloud's rows start at their own offset; of a
 * dense one split in two, the first half ends where the second starts. */
static int64_t cloud_rows(const void *args, int64_t begin, int64_t end) {
  const cloud_args *a = args;
  const int64_t point = point_bytes(a->has_rgb, a->label_bytes);
  const int whole = begin == 0 && end == a->rows;
  uint8_t *p = !a->dense ? a->out + begin * a->cols * point : begin ? a->second : a->out;
  const uint8_t *limit = a->dense && !whole && !begin ? a->second : a->end;
  int64_t valid = 0;
  if (a->dense) {
    CLOUD_ROWS(a->has_rgb, a->label_bytes, 1)
  } else if (a->has_rgb && a->label_bytes == 1) {
    CLOUD_ROWS(1, 1, 0)
  } else if (a->has_rgb && a->label_bytes == 2) {
    CLOUD_ROWS(1, 2, 0)
  } else if (a->has_rgb) {
    CLOUD_ROWS(1, 0, 0)
  } else {
    CLOUD_ROWS(0, a->label_bytes, 0)
  }
  return valid;
}

/* Back-projects every stride-th pixel into 12/16/20-byte points: x = z * col_factor[j],
 * y = z * row_factor[i], z (NaN where z is invalid), then 0x00RRGGBB of the pixel when rgb is
 * given, then its label as uint32 when labels is given. rows/cols count the strided grid;
 * col_factor/row_factor are float32 (u - cx) / fx and (v - cy) / fy of its pixels.
 * dense = 0: every point, row-major (an organized cloud); dense = 1: valid points only, in the
 * same order (a large one counts its first half's first). Large clouds in two halves (run_rows).
 * Returns the number of valid points; writes nothing past out + capacity (bytes): -1 for an
 * organized cloud that does not fit, a dense one writes the points that fit. */
XNET_API int64_t xnet_cloud(const uint8_t *depth, ptrdiff_t depth_row, int64_t rows, int64_t cols,
                            int64_t stride, const float *col_factor, const float *row_factor,
                            int has_max, float max_range, const uint8_t *rgb, ptrdiff_t rgb_row,
                            const uint8_t *labels, ptrdiff_t labels_row, int label_bytes,
                            int dense, uint8_t *out, int64_t capacity) {
  const int has_rgb = rgb != NULL;
  if (!labels) label_bytes = 0;
  const int64_t point = point_bytes(has_rgb, label_bytes), bytes = rows * cols * point;
  if (!dense && bytes > capacity) return -1;
  cloud_args args = {depth, rgb, labels, depth_row, rgb_row, labels_row, cols, stride,
                     col_factor, row_factor, has_max, has_rgb, label_bytes, dense, max_range,
                     rows, out, NULL, out + capacity};
  if (dense) { /* where the second half's points go: after the first half's valid ones */
    if (!split_wanted(bytes)) return cloud_rows(&args, 0, rows);
    const int64_t first = xnet_cloud_count(depth, depth_row, rows / 2, cols, stride, has_max,
                                           max_range);
    if (first * point > capacity) return cloud_rows(&args, 0, rows);
    args.second = out + first * point;
  }
  return run_rows(cloud_rows, &args, rows, bytes);
}

/* One output row of xnet_nearest_labels; label_bytes is a compile-time constant in each caller.
 * table: colour words 0x00BBGGRR (bytes R, G, B, 0) of every label below table_size; each
 * pixel stores 4 bytes (the next pixel overwrites the fourth), the last one 3. */
static inline __attribute__((always_inline)) void nearest_label_row(
    const uint8_t *s, const int64_t *cols, int64_t out_cols, int label_bytes, uint8_t *l_out,
    const uint32_t *table, int64_t table_size, uint8_t *c_out) {
  for (int64_t j = 0; j < out_cols; j++) {
    const uint32_t label = label_at(s, cols[j], label_bytes);
    if (l_out) {
      if (label_bytes == 1) {
        l_out[j] = (uint8_t)label;
      } else {
        const uint16_t value = (uint16_t)label;
        memcpy(l_out + 2 * j, &value, 2);
      }
    }
    if (c_out) {
      const uint32_t word = (int64_t)label < table_size ? table[label] : 0;
      if (j + 1 < out_cols) {
        memcpy(c_out + 3 * j, &word, 4);
      } else {
        memcpy(c_out + 3 * j, &word, 3);
      }
    }
  }
}

static int in_range(const int64_t *index, int64_t n, int64_t size) {
  for (int64_t k = 0; k < n; k++) {
    if (index[k] < 0 || index[k] >= size) return 0;
  }
  return 1;
}

typedef struct {
  const uint8_t *src;
  ptrdiff_t src_row;
  int label_bytes;
  const int64_t *rows, *cols;
  int64_t out_cols, lut_size, table_size;
  uint8_t *labels_out, *color_out;
  const uint8_t *lut;
  const uint32_t *table;
} labels_args;

/* Output rows [begin, end); a row that repeats its predecessor's source row (within the range:
 * the other half may not have written it yet) is copied. */
static int64_t label_rows(const void *args, int64_t begin, int64_t end) {
  const labels_args *a = args;
  const int64_t out_cols = a->out_cols, label_bytes = a->label_bytes;
  const size_t label_row_bytes = (size_t)out_cols * label_bytes, color_row_bytes = out_cols * 3;
  for (int64_t i = begin; i < end; i++) {
    uint8_t *l_out = a->labels_out ? a->labels_out + i * label_row_bytes : NULL;
    uint8_t *c_out = a->color_out ? a->color_out + i * color_row_bytes : NULL;
    if (i > begin && a->rows[i] == a->rows[i - 1]) {
      if (l_out) memcpy(l_out, l_out - label_row_bytes, label_row_bytes);
      if (c_out) memcpy(c_out, c_out - color_row_bytes, color_row_bytes);
      continue;
    }
    const uint8_t *s = a->src + a->rows[i] * a->src_row;
    if (label_bytes == 1) {
      nearest_label_row(s, a->cols, out_cols, 1, l_out, a->table, a->table_size, c_out);
    } else if (a->lut_size <= 256) {
      nearest_label_row(s, a->cols, out_cols, 2, l_out, a->table, a->table_size, c_out);
    } else {  /* more than 256 colours: 3-byte reads from lut */
      for (int64_t j = 0; j < out_cols; j++) {
        const uint32_t label = label_at(s, a->cols[j], 2);
        if (l_out) {
          const uint16_t value = (uint16_t)label;
          memcpy(l_out + 2 * j, &value, 2);
        }
        if (c_out) {
          static const uint8_t black[3] = {0, 0, 0};
          memcpy(c_out + 3 * j, (int64_t)label < a->lut_size ? a->lut + 3 * label : black, 3);
        }
      }
    }
  }
  return 0;
}

/* Nearest-neighbour resize of a (src_rows, src_cols) label map through index maps (output pixel
 * (i, j) takes source (rows[i], cols[j])), into labels_out (same label type; may be NULL) and
 * its colours into color_out (RGB, lut[label], black for labels >= lut_size; may be NULL).
 * Output rows that repeat their predecessor's source row are copied; large outputs in two
 * halves (run_rows). Returns -1 (and writes nothing) when an index is outside the source,
 * else 0. */
XNET_API int xnet_nearest_labels(const uint8_t *src, int64_t src_rows, int64_t src_cols,
                                 ptrdiff_t src_row, int label_bytes, const int64_t *rows,
                                 int64_t out_rows, const int64_t *cols, int64_t out_cols,
                                 uint8_t *labels_out, const uint8_t *lut, int64_t lut_size,
                                 uint8_t *color_out) {
  if (!in_range(rows, out_rows, src_rows) || !in_range(cols, out_cols, src_cols)) return -1;
  uint32_t table[256]; /* colour words of the first 256 labels; past them, read from lut */
  const int64_t table_size = lut_size < 256 ? lut_size : 256;
  for (int64_t k = 0; k < table_size; k++) {
    const uint8_t *rgb = lut + 3 * k;
    table[k] = (uint32_t)rgb[0] | (uint32_t)rgb[1] << 8 | (uint32_t)rgb[2] << 16;
  }
  const labels_args args = {src, src_row, label_bytes, rows, cols, out_cols, lut_size,
                            table_size, labels_out, color_out, lut, table};
  const int64_t pixel = (labels_out ? label_bytes : 0) + (color_out ? 3 : 0);
  run_rows(label_rows, &args, out_rows, out_rows * out_cols * pixel);
  return 0;
}
