/* The creation record's stack capture, in C: what mpsanitizer.stacks.capturer
 * generates in Python, without a Python frame and with no frame object of its own.
 *
 * capture(skip, method) returns [method, tracker.pid, serial, code, lasti, ...]: up to
 * `depth` frames, innermost first, from the first frame at or above the one `skip`
 * calls up from the caller whose module (its globals' __name__) is not internal. The
 * judgement is the Python side's: a dict of module name -> bool, and a function that
 * decides (and remembers) a name the dict does not know yet.
 *
 * Optional: mpsanitizer works the same without it (mpsanitizer/stacks.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#define MAX_DEPTH 256

typedef struct {
    PyObject_HEAD
    int depth;
    int composite; /* serial = ~next_serial() */
    PyObject *tracker;
    PyObject *next_serial;
    PyObject *known;
    PyObject *judge;
} Capturer;

static PyObject *pid_name;
static PyObject *name_key;

static PyObject *
frame_globals(PyFrameObject *frame)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetGlobals(frame);
#else
    Py_XINCREF(frame->f_globals);
    return frame->f_globals;
#endif
}

static int
frame_lasti(PyFrameObject *frame)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#elif PY_VERSION_HEX >= 0x030A0000
    return frame->f_lasti < 0 ? -1 : frame->f_lasti * (int)sizeof(_Py_CODEUNIT);
#else
    return frame->f_lasti;
#endif
}

/* 1: the frame's module is internal, 0: it is the user's, -1: an error. */
static int
is_internal(Capturer *self, PyFrameObject *frame)
{
    PyObject *globals = frame_globals(frame);
    PyObject *name = NULL, *verdict;
    int result;
    if (globals != NULL && PyDict_Check(globals)) {
        name = PyDict_GetItemWithError(globals, name_key);
        if (name == NULL && PyErr_Occurred()) {
            Py_DECREF(globals);
            return -1;
        }
    }
    if (name == NULL)
        name = Py_None;
    Py_INCREF(name);
    Py_XDECREF(globals);
    verdict = PyDict_GetItemWithError(self->known, name);
    if (verdict != NULL) {
        result = PyObject_IsTrue(verdict);
    }
    else if (PyErr_Occurred()) {
        result = -1;
    }
    else {
        verdict = PyObject_CallOneArg(self->judge, name);
        result = verdict == NULL ? -1 : PyObject_IsTrue(verdict);
        Py_XDECREF(verdict);
    }
    Py_DECREF(name);
    return result;
}

static PyObject *
capture(Capturer *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t skip, count = 0, i;
    PyObject *items[2 * MAX_DEPTH];
    PyObject *pid, *serial, *record = NULL;
    PyFrameObject *frame, *back;
    int internal;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "capture(skip, method)");
        return NULL;
    }
    skip = PyLong_AsSsize_t(args[0]);
    if (skip == -1 && PyErr_Occurred())
        return NULL;
    frame = PyEval_GetFrame(); /* the caller's: this function has no frame */
    Py_XINCREF(frame);
    for (i = 0; i < skip && frame != NULL; i++) {
        back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    while (frame != NULL) {
        internal = is_internal(self, frame);
        if (internal < 0)
            goto error;
        if (!internal)
            break;
        back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    while (frame != NULL && count < self->depth) {
        items[2 * count] = (PyObject *)PyFrame_GetCode(frame);
        items[2 * count + 1] = PyLong_FromLong(frame_lasti(frame));
        count++;
        if (items[2 * count - 1] == NULL)
            goto error;
        back = count < self->depth ? PyFrame_GetBack(frame) : NULL;
        Py_DECREF(frame);
        frame = back;
    }
    Py_CLEAR(frame);
    pid = PyObject_GetAttr(self->tracker, pid_name);
    if (pid == NULL)
        goto error;
    serial = PyObject_CallNoArgs(self->next_serial);
    if (serial != NULL && self->composite) {
        PyObject *inverted = PyNumber_Invert(serial);
        Py_DECREF(serial);
        serial = inverted;
    }
    if (serial == NULL) {
        Py_DECREF(pid);
        goto error;
    }
    record = PyList_New(3 + 2 * count);
    if (record == NULL) {
        Py_DECREF(pid);
        Py_DECREF(serial);
        goto error;
    }
    Py_INCREF(args[1]);
    PyList_SET_ITEM(record, 0, args[1]);
    PyList_SET_ITEM(record, 1, pid);
    PyList_SET_ITEM(record, 2, serial);
    for (i = 0; i < 2 * count; i++)
        PyList_SET_ITEM(record, 3 + i, items[i]);
    return record;

error:
    Py_XDECREF(frame);
    for (i = 0; i < 2 * count; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *
capturer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"depth", "composite", "tracker", "next_serial", "known", "judge",
                             NULL};
    int depth, composite;
    PyObject *tracker, *next_serial, *known, *judge;
    Capturer *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ipOOO!O", kwlist, &depth, &composite, &tracker,
                                     &next_serial, &PyDict_Type, &known, &judge))
        return NULL;
    if (depth < 1 || depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "depth out of range");
        return NULL;
    }
    self = (Capturer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->depth = depth;
    self->composite = composite;
    Py_INCREF(tracker);
    self->tracker = tracker;
    Py_INCREF(next_serial);
    self->next_serial = next_serial;
    Py_INCREF(known);
    self->known = known;
    Py_INCREF(judge);
    self->judge = judge;
    return (PyObject *)self;
}

static int
capturer_traverse(Capturer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tracker);
    Py_VISIT(self->next_serial);
    Py_VISIT(self->known);
    Py_VISIT(self->judge);
    return 0;
}

static int
capturer_clear(Capturer *self)
{
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->next_serial);
    Py_CLEAR(self->known);
    Py_CLEAR(self->judge);
    return 0;
}

static void
capturer_dealloc(Capturer *self)
{
    PyObject_GC_UnTrack(self);
    capturer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef capturer_methods[] = {
    {"capture", (PyCFunction)(void (*)(void))capture, METH_FASTCALL,
     "capture(skip, method): a new creation record."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CapturerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpsanitizer._capture.Capturer",
    .tp_basicsize = sizeof(Capturer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Capturer(depth, composite, tracker, next_serial, known, judge)",
    .tp_new = capturer_new,
    .tp_traverse = (traverseproc)capturer_traverse,
    .tp_clear = (inquiry)capturer_clear,
    .tp_dealloc = (destructor)capturer_dealloc,
    .tp_methods = capturer_methods,
};

static struct PyModuleDef capture_module = {
    PyModuleDef_HEAD_INIT, "mpsanitizer._capture",
    "The creation record's stack capture, in C (optional).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__capture(void)
{
    PyObject *module;
    pid_name = PyUnicode_InternFromString("pid");
    name_key = PyUnicode_InternFromString("__name__");
    if (pid_name == NULL || name_key == NULL || PyType_Ready(&CapturerType) < 0)
        return NULL;
    module = PyModule_Create(&capture_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&CapturerType);
    if (PyModule_AddObject(module, "Capturer", (PyObject *)&CapturerType) < 0) {
        Py_DECREF(&CapturerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
