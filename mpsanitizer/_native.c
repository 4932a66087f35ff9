/* mpsanitizer's two hot paths in C, each standing in for Python code that does the same
 * (mpsanitizer works the same without this module: mpsanitizer/extension.py):
 *
 * Capturer.capture(skip, method), the creation record's stack: what
 * mpsanitizer.stacks.capturer generates in Python, without a Python frame and with no frame
 * object of its own. It returns [method, tracker.pid, serial, code, lasti, ...]: up to
 * `depth` frames, innermost first, from the first frame at or above the one `skip` calls up
 * from the caller whose module (its globals' __name__) is not internal. The judgement is the
 * Python side's: a dict of module name -> bool, and a function that decides (and
 * remembers) a name the dict does not know yet.
 *
 * ForkCheck.check(popen, process), the check of a fork start (mpsanitizer.forkwalk), below.
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
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpsanitizer._native.Capturer",
    .tp_basicsize = sizeof(Capturer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Capturer(depth, composite, tracker, next_serial, known, judge)",
    .tp_new = capturer_new,
    .tp_traverse = (traverseproc)capturer_traverse,
    .tp_clear = (inquiry)capturer_clear,
    .tp_dealloc = (destructor)capturer_dealloc,
    .tp_methods = capturer_methods,
};

/* The walk of a fork start: mpsanitizer.forkwalk's roots and loop (tracked) for a process
 * object of a Process class the table says PROCESS for, without writing to the objects it
 * reads: after a fork each page written is copied (a page fault, about a microsecond), and
 * Python code writes the reference count of everything it touches. It holds borrowed
 * references only, which is safe because no Python code runs meanwhile: it gives None,
 * for the Python walk to do the work, wherever that would be needed (a class not in the
 * table yet, one walked by inspection, a metaclass of its own, more objects than its
 * arrays hold). fork_walk(process, budget, per_container, table) exposes it to the tests. */
#define TODO_SIZE 4096
#define SEEN_SIZE 256
#define FOUND_SIZE 64
enum {
    SKIP, SEQUENCE, MAPPING, TRACKED, PLAIN, FUNCTION, CLOSED, OTHER, PROCESS, STANDARD,
    METHOD, BUILTIN, PARTIAL
}; /* forkwalk's */

static PyObject *todo[TODO_SIZE];
static PyObject *seen[SEEN_SIZE];
static PyObject *root_names[3];    /* _args, _kwargs, _target */
static PyObject *partial_names[3]; /* func, args, keywords */

static int
push(Py_ssize_t *count, PyObject *obj)
{
    if (*count >= TODO_SIZE)
        return -1;
    todo[(*count)++] = obj;
    return 0;
}

static int
push_items(Py_ssize_t *count, PyObject *const *items, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if (push(count, items[i]) < 0)
            return -1;
    return 0;
}

/* The kind the table gives the class of obj, or -1 where only Python can tell. */
static long
kind_of(PyObject *table, PyObject *obj)
{
    PyTypeObject *cls = Py_TYPE(obj), *meta = Py_TYPE(cls);
    PyObject *kind;
    if (meta != &PyType_Type &&
        (meta->tp_hash != PyType_Type.tp_hash || meta->tp_richcompare != PyType_Type.tp_richcompare))
        return -1; /* its class's hash or == could run Python code */
    kind = PyDict_GetItemWithError(table, (PyObject *)cls);
    if (kind == NULL || !PyLong_CheckExact(kind)) {
        PyErr_Clear();
        return -1;
    }
    return PyLong_AsLong(kind);
}

/* A plain object's __dict__ (borrowed), or NULL (no error set) where only Python can
 * tell. Read where it lies: no reference taken, so nothing written, except where 3.11+
 * keeps the attributes inline and makes the dict at this first look, as `obj.__dict__`
 * would (an allocation: the collector, which could run finalizers, is off meanwhile). */
static PyObject *
instance_dict(PyObject *obj)
{
    PyObject **slot = _PyObject_GetDictPtr(obj);
    if (slot == NULL)
        PyErr_Clear();
    return slot != NULL ? *slot : NULL;
}
#if PY_VERSION_HEX >= 0x030B0000
#define GC_DISABLE() int gc_was_on = PyGC_Disable()
#define GC_ENABLE() (gc_was_on ? (void)PyGC_Enable() : (void)0)
#else
#define GC_DISABLE() ((void)0)
#define GC_ENABLE() ((void)0)
#endif

/* What a fork child receives of a process object (forkwalk's roots): its _args, _kwargs
 * and _target, and the attributes a Process subclass added. 0, or -1: Python's to do. */
static int
push_roots(Py_ssize_t *count, PyObject *attrs, PyObject *table)
{
    PyObject *key, *value, *kind;
    Py_ssize_t pos = 0;
    int i;
    for (i = 0; i < 3; i++) {
        value = PyDict_GetItemWithError(attrs, root_names[i]);
        if (value == NULL && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        if (push(count, value != NULL ? value : Py_None) < 0)
            return -1;
    }
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return -1; /* its hash or == could run Python code */
        kind = PyDict_GetItemWithError(table, key);
        if (kind == NULL && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        if ((kind == NULL || !PyLong_CheckExact(kind) || PyLong_AsLong(kind) != STANDARD) &&
            push(count, value) < 0)
            return -1;
    }
    return 0;
}

/* The walk: the tracked objects found (a new list, or the empty tuple), or None (a new
 * reference too) where Python must walk, or NULL with an error set. */
static PyObject *
walk_process(PyObject *proc, Py_ssize_t budget, Py_ssize_t per, PyObject *table)
{
    PyObject *obj, *attrs, *key, *value, *part, *result;
    PyObject *found[FOUND_SIZE];
    Py_ssize_t count = 0, i = 0, n_seen = 0, n_found = 0, j, n, pos;
    long kind;
    int failed;
    if (budget >= SEEN_SIZE || kind_of(table, proc) != PROCESS)
        Py_RETURN_NONE; /* not a process class already judged plain */
    GC_DISABLE();
    attrs = instance_dict(proc);
    if (attrs == NULL)
        goto python;
    failed = !PyDict_CheckExact(attrs) || push_roots(&count, attrs, table) < 0;
    if (failed)
        goto python;
    while (i < count) {
        obj = todo[i++];
        kind = kind_of(table, obj);
        if (kind < 0)
            goto python;
        if (kind == SKIP)
            continue;
        for (j = 0; j < n_seen && seen[j] != obj; j++)
            ;
        if (j < n_seen)
            continue;
        seen[n_seen++] = obj;
        if (--budget < 0)
            break;
        switch (kind) {
        case SEQUENCE:
            if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj))
                goto python;
            n = PySequence_Fast_GET_SIZE(obj);
            if (push_items(&count, PySequence_Fast_ITEMS(obj), n < per ? n : per) < 0)
                goto python;
            break;
        case TRACKED:
            if (n_found == FOUND_SIZE)
                goto python;
            found[n_found++] = obj;
            break;
        case MAPPING:
            if (!PyDict_CheckExact(obj) || PyDict_GET_SIZE(obj) > per)
                goto python; /* a bigger one is cut by inspection */
            for (pos = 0; PyDict_Next(obj, &pos, &key, &value);)
                if (push(&count, key) < 0)
                    goto python;
            for (pos = 0; PyDict_Next(obj, &pos, &key, &value);)
                if (push(&count, value) < 0)
                    goto python;
            break;
        case PLAIN:
            attrs = instance_dict(obj);
            if (attrs == NULL)
                goto python;
            failed = !PyDict_CheckExact(attrs) || PyDict_GET_SIZE(attrs) > per;
            for (pos = 0; !failed && PyDict_Next(attrs, &pos, &key, &value);)
                failed = push(&count, value) < 0;
            if (failed)
                goto python;
            break;
        case FUNCTION:
            if (!PyFunction_Check(obj))
                goto python;
            part = PyFunction_GetDefaults(obj);
            if (part != NULL && PyObject_IsTrue(part) && push(&count, part) < 0)
                goto python;
            part = PyFunction_GetKwDefaults(obj);
            if (part != NULL && PyObject_IsTrue(part) && push(&count, part) < 0)
                goto python;
            part = PyFunction_GetClosure(obj);
            if (part != NULL && PyTuple_Check(part)) {
                for (j = 0; j < PyTuple_GET_SIZE(part); j++) {
                    value = PyTuple_GET_ITEM(part, j);
                    if (PyCell_Check(value) && PyCell_GET(value) != NULL &&
                        push(&count, PyCell_GET(value)) < 0)
                        goto python;
                }
            }
            break;
        case CLOSED:
        case BUILTIN: /* a built-in function or method: no part a child reaches */
            break;
        case METHOD:
            if (!PyMethod_Check(obj) || push(&count, PyMethod_GET_SELF(obj)) < 0)
                goto python;
            break;
        case PARTIAL: /* its func, args and keywords: C members, held by it */
            for (j = 0; j < 3; j++) {
                part = PyObject_GetAttr(obj, partial_names[j]);
                if (part == NULL)
                    goto fail;
                Py_DECREF(part);
                if (push(&count, part) < 0)
                    goto python;
            }
            break;
        default: /* walked by inspection (its parts), or a process object */
            goto python;
        }
    }
    GC_ENABLE();
    if (n_found == 0)
        return PyTuple_New(0); /* the empty tuple: nothing allocated, nothing written */
    result = PyList_New(n_found);
    for (j = 0; result != NULL && j < n_found; j++) {
        Py_INCREF(found[j]);
        PyList_SET_ITEM(result, j, found[j]);
    }
    return result;

python:
    GC_ENABLE();
    Py_RETURN_NONE;
fail:
    GC_ENABLE();
    return NULL;
}

static int
sizes(PyObject *budget_arg, PyObject *per_arg, Py_ssize_t *budget, Py_ssize_t *per)
{
    *budget = PyLong_AsSsize_t(budget_arg);
    *per = PyLong_AsSsize_t(per_arg);
    return (*budget == -1 || *per == -1) && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
fork_walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t budget, per;
    if (nargs != 4 || !PyDict_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "fork_walk(process, budget, per_container, table)");
        return NULL;
    }
    if (sizes(args[1], args[2], &budget, &per) < 0)
        return NULL;
    return walk_process(args[0], budget, per, args[3]);
}

/* ForkCheck(table, budget, per_container, python_check, on_found).check(popen, process):
 * mpsanitizer.forkwalk's check of a fork start, for the `_launch` hook to call: the popen's
 * start method and the walk in C, `on_found(popen, process, found)` when it finds
 * something, and `python_check(popen, process)` for all that it leaves to Python (or an
 * error of its own: the Python check fails open). The start method is read from the
 * popen's class (a `method` attribute set on the instance before `_launch` runs, which
 * `Popen.__init__` calls first, is not seen). */
typedef struct {
    PyObject_HEAD
    PyObject *table;
    Py_ssize_t budget;
    Py_ssize_t per;
    PyObject *python_check;
    PyObject *on_found;
} ForkCheck;

static PyObject *method_name;

/* 1: a fork popen, 0: another start method's, -1: Python's to tell. */
static int
forks(PyObject *popen)
{
    PyTypeObject *cls = Py_TYPE(popen);
    PyObject *method;
    if (cls->tp_getattro != PyObject_GenericGetAttr)
        return -1;
    method = _PyType_Lookup(cls, method_name); /* borrowed, and no code runs */
    if (method == NULL)
        return PyErr_Occurred() ? (PyErr_Clear(), -1) : 1; /* getattr's default: "fork" */
    if (!PyUnicode_CheckExact(method))
        return -1;
    return PyUnicode_CompareWithASCIIString(method, "fork") == 0;
}

static PyObject *
fork_check(ForkCheck *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *found, *call[3];
    int fork;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "check(popen, process)");
        return NULL;
    }
    fork = forks(args[0]);
    if (fork == 0)
        Py_RETURN_NONE;
    found = fork < 0 ? NULL : walk_process(args[1], self->budget, self->per, self->table);
    if (found == NULL)
        PyErr_Clear(); /* the Python check says what went wrong, or does it right */
    if (found == NULL || found == Py_None) {
        Py_XDECREF(found);
        return PyObject_Vectorcall(self->python_check, args, 2, NULL);
    }
    if (PyTuple_CheckExact(found)) { /* the empty tuple: nothing found */
        Py_DECREF(found);
        Py_RETURN_NONE;
    }
    call[0] = args[0];
    call[1] = args[1];
    call[2] = found;
    PyObject *error = PyObject_Vectorcall(self->on_found, call, 3, NULL);
    Py_DECREF(found);
    return error;
}

static PyObject *
forkcheck_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"table", "budget", "per_container", "python_check", "on_found",
                             NULL};
    PyObject *table, *budget, *per, *python_check, *on_found;
    ForkCheck *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOO", kwlist, &PyDict_Type, &table,
                                     &budget, &per, &python_check, &on_found))
        return NULL;
    self = (ForkCheck *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (sizes(budget, per, &self->budget, &self->per) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(table);
    self->table = table;
    Py_INCREF(python_check);
    self->python_check = python_check;
    Py_INCREF(on_found);
    self->on_found = on_found;
    return (PyObject *)self;
}

static int
forkcheck_traverse(ForkCheck *self, visitproc visit, void *arg)
{
    Py_VISIT(self->table);
    Py_VISIT(self->python_check);
    Py_VISIT(self->on_found);
    return 0;
}

static int
forkcheck_clear(ForkCheck *self)
{
    Py_CLEAR(self->table);
    Py_CLEAR(self->python_check);
    Py_CLEAR(self->on_found);
    return 0;
}

static void
forkcheck_dealloc(ForkCheck *self)
{
    PyObject_GC_UnTrack(self);
    forkcheck_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef forkcheck_methods[] = {
    {"check", (PyCFunction)(void (*)(void))fork_check, METH_FASTCALL,
     "check(popen, process): the error to raise for this fork start, or None."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForkCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpsanitizer._native.ForkCheck",
    .tp_basicsize = sizeof(ForkCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ForkCheck(table, budget, per_container, python_check, on_found)",
    .tp_new = forkcheck_new,
    .tp_traverse = (traverseproc)forkcheck_traverse,
    .tp_clear = (inquiry)forkcheck_clear,
    .tp_dealloc = (destructor)forkcheck_dealloc,
    .tp_methods = forkcheck_methods,
};

static PyMethodDef native_functions[] = {
    {"fork_walk", (PyCFunction)(void (*)(void))fork_walk, METH_FASTCALL,
     "fork_walk(process, budget, per_container, table): the tracked objects, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "mpsanitizer._native",
    "mpsanitizer's hot paths in C (optional).", -1, native_functions,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module;
    int i;
    pid_name = PyUnicode_InternFromString("pid");
    name_key = PyUnicode_InternFromString("__name__");
    root_names[0] = PyUnicode_InternFromString("_args");
    root_names[1] = PyUnicode_InternFromString("_kwargs");
    root_names[2] = PyUnicode_InternFromString("_target");
    partial_names[0] = PyUnicode_InternFromString("func");
    partial_names[1] = PyUnicode_InternFromString("args");
    partial_names[2] = PyUnicode_InternFromString("keywords");
    for (i = 0; i < 3; i++)
        if (root_names[i] == NULL || partial_names[i] == NULL)
            return NULL;
    method_name = PyUnicode_InternFromString("method");
    if (method_name == NULL || PyType_Ready(&ForkCheckType) < 0)
        return NULL;
    if (pid_name == NULL || name_key == NULL || PyType_Ready(&CapturerType) < 0)
        return NULL;
    module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ForkCheckType);
    if (PyModule_AddObject(module, "ForkCheck", (PyObject *)&ForkCheckType) < 0) {
        Py_DECREF(&ForkCheckType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&CapturerType);
    if (PyModule_AddObject(module, "Capturer", (PyObject *)&CapturerType) < 0) {
        Py_DECREF(&CapturerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
