"""Build of mamba2c's C extension.

Environment:
  MAMBA2C_BLAS=auto|0|1   link OpenBLAS (found with pkg-config) for large float32 GEMMs (auto)
  MAMBA2C_WERROR=1        compile with -Werror (CI)
  MAMBA2C_DEBUG=1         -O0 -g, for debuggers and sanitizers
"""
import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup


def pkg_config(package, search_path=None):
    """(cflags, libs) of a pkg-config package, or None when it is not installed."""
    if not shutil.which("pkg-config"):
        return None
    env = dict(os.environ)
    if search_path:
        env["PKG_CONFIG_PATH"] = os.pathsep.join([search_path, env.get("PKG_CONFIG_PATH", "")])
    try:
        run = lambda flag: subprocess.check_output(["pkg-config", flag, package], text=True,
                                                   env=env, stderr=subprocess.DEVNULL).split()
        return run("--cflags"), run("--libs")
    except subprocess.CalledProcessError:
        return None


def blas_flags():
    mode = os.environ.get("MAMBA2C_BLAS", "auto")
    if mode == "0":
        return [], [], []
    # Prefer OpenBLAS built on OpenMP (Debian's libopenblas-openmp-dev): it shares our OpenMP
    # thread pool, where the pthread build's own threads would contend with ours for the cores.
    openmp_dirs = glob.glob("/usr/lib/*/openblas-openmp/pkgconfig")
    found = (pkg_config("openblas", openmp_dirs[0]) if openmp_dirs else None) or pkg_config("openblas")
    if found is None:
        if mode == "1":
            raise RuntimeError("MAMBA2C_BLAS=1 but pkg-config cannot find openblas "
                               "(Debian: apt-get install libopenblas-dev)")
        print("mamba2c: OpenBLAS not found, using the built-in GEMM")
        return [], [], []
    cflags, libs = found
    # Link the library by path so the extension finds it at run time without LD_LIBRARY_PATH.
    rpaths = [flag[2:] for flag in libs if flag.startswith("-L")]
    return cflags, libs + [f"-Wl,-rpath,{path}" for path in rpaths], [("M2C_HAVE_OPENBLAS", "1")]


def extension():
    blas_cflags, blas_libs, macros = blas_flags()
    debug = os.environ.get("MAMBA2C_DEBUG") == "1"
    # No code reads errno or the floating-point exception flags; without them element-wise loops
    # with exp and float-to-int conversions vectorise. Results are unchanged (no reassociation).
    cflags = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-fvisibility=hidden",
              "-fno-math-errno", "-fno-trapping-math",
              "-O0" if debug else "-O3", "-g" if debug else "-g0"]
    if os.environ.get("MAMBA2C_WERROR") == "1":
        cflags.append("-Werror")
    sources = sorted(glob.glob("csrc/cpu/*.c") + glob.glob("csrc/model/*.c")
                     + glob.glob("csrc/python/*.c"))
    return Extension(
        "mamba2c._C",
        sources=sources,
        include_dirs=["csrc/include"],
        define_macros=macros,
        extra_compile_args=cflags + blas_cflags,
        extra_link_args=["-fopenmp"] + blas_libs,
        depends=glob.glob("csrc/**/*.h", recursive=True),
    )


setup(ext_modules=[extension()])
