/* Decode only the rows and columns of a JPEG that a crop needs, with libjpeg-turbo.
 *
 * Why: for a box in a photo, a whole-image decode spends most of its time on pixels the
 * crop throws away. libjpeg-turbo's libjpeg API can (1) scale by 1/2, 1/4, 1/8 in the
 * DCT domain, (2) skip the inverse DCT, upsampling and colour conversion of rows above
 * the region (jpeg_skip_scanlines) and of columns outside it (jpeg_crop_scanline).
 * Entropy decoding cannot be skipped anywhere: baseline Huffman data is sequential above
 * the region, and below it the rest is decoded (not reconstructed) to the end-of-image
 * marker, so that damage anywhere in the file fails it, as a whole-image decode does.
 *
 * The pixels it returns are the same as a whole-image decode's at the same scale (ISLOW
 * IDCT, fancy upsampling: libjpeg-turbo's defaults, also simplejpeg's), which the tests
 * check, so whether this module is built never changes a dataset's bytes.
 *
 * Any libjpeg warning (corrupt data, a premature end of data) is an error here, as in
 * simplejpeg's strict mode: a damaged photo is not cropped, wherever the damage is.
 *
 * Limits (a legal progressive JPEG of a few hundred KiB can hold thousands of scans, each
 * a pass over every coefficient: seconds of CPU): a progress monitor, called by libjpeg
 * before each chunk of input it consumes, sees every scan header before that scan's data
 * is decoded, and aborts (LimitExceeded, through the error manager's longjmp) past
 * `max_scans` scans or once the scans' 8x8 blocks, summed, pass `max_blocks`. It is the
 * mechanism of TurboJPEG's TJFLAG_LIMITSCANS; libjpeg-turbo 2.1's libjpeg API itself has
 * no such limit. crop.py counts the same way from the markers for its other decoders.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} ErrorManager;

/* What the progress monitor counts, and where it stops (0: no limit). */
typedef struct {
  struct jpeg_progress_mgr pub;
  int max_scans;
  long long max_blocks;
  int scans_counted;
  long long blocks;
  int exceeded; /* 0, or which limit stopped the decode */
} Budget;

enum { WITHIN = 0, OVER_SCANS = 1, OVER_BLOCKS = 2 };

static PyObject *LimitExceeded; /* a ValueError: the JPEG decodes, but costs too much */

static void on_error(j_common_ptr cinfo) {
  ErrorManager *err = (ErrorManager *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) { /* a warning: treat it as an error (strict) */
    on_error(cinfo);
  }
}

/* Called before each chunk of input libjpeg consumes: after a scan header is read and
 * before any of that scan's data. Scans are counted (and their blocks added) once each. */
static void on_progress(j_common_ptr common) {
  j_decompress_ptr cinfo = (j_decompress_ptr)common;
  Budget *budget = (Budget *)cinfo->progress;
  if (cinfo->input_scan_number == budget->scans_counted) return;
  budget->scans_counted = cinfo->input_scan_number;
  if (budget->max_scans > 0 && cinfo->input_scan_number > budget->max_scans) {
    budget->exceeded = OVER_SCANS;
  } else {
    for (int i = 0; i < cinfo->comps_in_scan; i++) {
      const jpeg_component_info *comp = cinfo->cur_comp_info[i];
      budget->blocks += (long long)comp->width_in_blocks * (long long)comp->height_in_blocks;
    }
    if (budget->max_blocks > 0 && budget->blocks > budget->max_blocks) {
      budget->exceeded = OVER_BLOCKS;
    }
  }
  if (budget->exceeded != WITHIN) {
    longjmp(((ErrorManager *)cinfo->err)->jump, 1);
  }
}

PyDoc_STRVAR(decode_region_doc,
"decode_region(data, scale_denom, left, top, right, bottom, max_scans=0, max_blocks=0)\n"
"    -> (pixels, width, height, x, y)\n"
"\n"
"Decode the region [left, right) x [top, bottom) of a JPEG, given in the pixels of the\n"
"image scaled by 1/scale_denom (1, 2, 4 or 8), as RGB, with the same pixel values as a\n"
"whole-image decode at that scale. The decoded block starts at or left of `left` (at an\n"
"iMCU boundary) and may end right of `right`: `pixels` holds `height` rows of `width` RGB\n"
"pixels whose top-left is (x, y) in the scaled image.\n"
"Raises ValueError for a JPEG that does not decode (or warns), for colour spaces other\n"
"than grayscale, YCbCr and RGB, and for a region outside the scaled image.\n"
"Raises LimitExceeded (a ValueError) before decoding scan max_scans + 1, or the scan whose\n"
"8x8 blocks (summed over its components, and over the scans so far) pass max_blocks;\n"
"its args are ('scans' or 'blocks', the scan number). 0 means no limit.");

static PyObject *decode_region(PyObject *Py_UNUSED(self), PyObject *args) {
  Py_buffer data;
  int denom, left, top, right, bottom, max_scans = 0;
  long long max_blocks = 0;
  if (!PyArg_ParseTuple(args, "y*iiiii|iL", &data, &denom, &left, &top, &right, &bottom,
                        &max_scans, &max_blocks)) {
    return NULL;
  }
  if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
    PyBuffer_Release(&data);
    PyErr_SetString(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8");
    return NULL;
  }
  struct jpeg_decompress_struct cinfo;
  ErrorManager err;
  Budget budget;
  /* volatile: read after a longjmp */
  PyObject *volatile pixels = NULL;
  PyThreadState *volatile released = NULL;
  volatile int created = 0;
  unsigned char *volatile scratch = NULL;
  memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  err.message[0] = '\0';
  memset(&budget, 0, sizeof(budget));
  budget.pub.progress_monitor = on_progress;
  budget.max_scans = max_scans > 0 ? max_scans : 0;
  budget.max_blocks = max_blocks > 0 ? max_blocks : 0;
  if (setjmp(err.jump)) {
    if (released != NULL) PyEval_RestoreThread(released);
    PyMem_RawFree(scratch);
    Py_XDECREF(pixels);
    if (created) jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    if (budget.exceeded != WITHIN) {
      PyObject *why = Py_BuildValue("(si)", budget.exceeded == OVER_SCANS ? "scans" : "blocks",
                                    budget.scans_counted);
      if (why != NULL) {
        PyErr_SetObject(LimitExceeded, why);
        Py_DECREF(why);
      }
    } else {
      PyErr_Format(PyExc_ValueError, "JPEG does not decode: %s", err.message);
    }
    return NULL;
  }
  jpeg_create_decompress(&cinfo);
  created = 1;
  cinfo.progress = &budget.pub;
  jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
      cinfo.jpeg_color_space != JCS_RGB) {
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    PyErr_SetString(PyExc_ValueError, "colour space is not grayscale, YCbCr or RGB");
    return NULL;
  }
  cinfo.out_color_space = JCS_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = (unsigned int)denom;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  /* Decoding work runs without the GIL, so a worker's threads can crop in parallel (for a
   * progressive JPEG, starting is where the whole file is entropy-decoded). */
  released = PyEval_SaveThread();
  jpeg_start_decompress(&cinfo);
  PyEval_RestoreThread(released);
  released = NULL;
  if (left < 0 || top < 0 || right <= left || bottom <= top ||
      (JDIMENSION)right > cinfo.output_width || (JDIMENSION)bottom > cinfo.output_height) {
    unsigned int w = cinfo.output_width, h = cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    PyErr_Format(PyExc_ValueError, "region (%d, %d, %d, %d) is outside the %ux%u image",
                 left, top, right, bottom, w, h);
    return NULL;
  }
  /* One column of context on each side: with fancy upsampling of subsampled chroma, the
   * edge columns of a cropped scanline are interpolated from fewer neighbours than in a
   * whole-image decode. Those columns are decoded but lie outside [left, right). */
  JDIMENSION x = (JDIMENSION)(left > 0 ? left - 1 : 0);
  JDIMENSION width = (JDIMENSION)right - x + ((JDIMENSION)right < cinfo.output_width ? 1 : 0);
  if (x > 0 || width < cinfo.output_width) {
    jpeg_crop_scanline(&cinfo, &x, &width);
  }
  Py_ssize_t stride = (Py_ssize_t)width * 3, height = bottom - top;
  pixels = PyBytes_FromStringAndSize(NULL, stride * height);
  if (pixels == NULL) {
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    return NULL;
  }
  unsigned char *out = (unsigned char *)PyBytes_AS_STRING(pixels);
  released = PyEval_SaveThread();
  /* Rows above the region: entropy-decoded (unavoidable) but not reconstructed. */
  if (top > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)top) != (JDIMENSION)top) {
    strcpy(err.message, "could not skip to the region");
    longjmp(err.jump, 1);
  }
  while (cinfo.output_scanline < (JDIMENSION)bottom) {
    JSAMPROW row = out + (Py_ssize_t)(cinfo.output_scanline - top) * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  /* Rows below the region: entropy-decoded but not reconstructed, and the file read to
   * its end-of-image marker, so that damage anywhere fails the photo here as it does in
   * the whole-image decode: whether this module is built must not change which photos
   * become examples. */
  if (cinfo.output_scanline < cinfo.output_height) {
    /* All but the last row: libjpeg-turbo skips a request that reaches the end of the
     * image by declaring end-of-image without decoding, so the last row is read, into a
     * row of its own (the cropped width). */
    JDIMENSION rest = cinfo.output_height - cinfo.output_scanline - 1;
    if (rest > 0 && jpeg_skip_scanlines(&cinfo, rest) != rest) {
      strcpy(err.message, "could not skip past the region");
      longjmp(err.jump, 1);
    }
    scratch = PyMem_RawMalloc((size_t)stride);
    if (scratch == NULL) {
      strcpy(err.message, "out of memory");
      longjmp(err.jump, 1);
    }
    JSAMPROW row = scratch;
    jpeg_read_scanlines(&cinfo, &row, 1);
    PyMem_RawFree(scratch);
    scratch = NULL;
  }
  jpeg_finish_decompress(&cinfo);
  PyEval_RestoreThread(released);
  released = NULL;
  jpeg_destroy_decompress(&cinfo);
  PyBuffer_Release(&data);
  return Py_BuildValue("(NIiII)", pixels, (unsigned int)width, (int)height,
                       (unsigned int)x, (unsigned int)top);
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS, decode_region_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion",
    "Region decoding of JPEGs with libjpeg-turbo (see pipelines/crop.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpegregion(void) {
  PyObject *m = PyModule_Create(&module);
  if (m == NULL) return NULL;
  LimitExceeded = PyErr_NewExceptionWithDoc(
      "pipelines._jpegregion.LimitExceeded",
      "The JPEG would decode, but holds more scans or more scan data than allowed.",
      PyExc_ValueError, NULL);
  if (LimitExceeded == NULL || PyModule_AddObjectRef(m, "LimitExceeded", LimitExceeded) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION_NUMBER",
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
                          LIBJPEG_TURBO_VERSION_NUMBER
#else
                          0
#endif
  );
  return m;
}
