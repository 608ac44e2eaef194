/* Ctrl-C during a long C call. Python runs its SIGINT handler only between bytecodes, never while
 * the engine holds the thread, so for the length of a call on the main thread a C handler
 * replaces Python's and raises the engine's stop flag; the call returns at its next check and
 * the binding raises KeyboardInterrupt. Only done while Python's default handler is in place:
 * a program with its own SIGINT handling keeps it. */
#include "binding.h"

#include <signal.h>

static volatile int stop_requested;

static void on_sigint(int signum) {
    (void)signum;
    stop_requested = 1;
}

static int default_handler_active(void) {
    PyObject *signal = PyImport_ImportModule("signal");
    if (!signal) {
        PyErr_Clear();
        return 0;
    }
    PyObject *current = PyObject_CallMethod(signal, "getsignal", "i", SIGINT);
    PyObject *fallback = PyObject_GetAttrString(signal, "default_int_handler");
    int active = current && fallback && current == fallback;
    Py_XDECREF(current);
    Py_XDECREF(fallback);
    Py_DECREF(signal);
    PyErr_Clear();
    return active;
}

static int on_main_thread(void) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading) {
        PyErr_Clear();
        return 0;
    }
    PyObject *current = PyObject_CallMethod(threading, "current_thread", NULL);
    PyObject *main = PyObject_CallMethod(threading, "main_thread", NULL);
    int is_main = current && main && current == main;
    Py_XDECREF(current);
    Py_XDECREF(main);
    Py_DECREF(threading);
    PyErr_Clear();
    return is_main;
}

void m2c_sigint_begin(m2c_sigint_guard *guard) {
    guard->installed = on_main_thread() && default_handler_active();
    if (!guard->installed) return;
    stop_requested = 0;
    guard->previous = PyOS_setsig(SIGINT, on_sigint);
}

void m2c_sigint_end(m2c_sigint_guard *guard) {
    if (guard->installed) PyOS_setsig(SIGINT, guard->previous);
    guard->installed = 0;
}

const volatile int *m2c_sigint_flag(void) { return &stop_requested; }
