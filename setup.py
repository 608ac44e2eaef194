"""Build of mamba2c's C extension.

Environment:
  MAMBA2C_BLAS=auto|0|1   link OpenBLAS (found with pkg-config) for large float32 GEMMs (auto)
  MAMBA2C_WERROR=1        compile with -Werror (CI)
  MAMBA2C_DEBUG=1         -O0 -g, for debuggers and sanitizers
  MAMBA2C_CUDA=auto|0|1   build the CUDA backend mamba2c._cuda when nvcc is found (auto)
  MAMBA2C_CUDA_ARCHS      compute capabilities to build machine code for, ';'-separated
                          (default "90", 80 or newer); PTX for the lowest one is embedded as
                          well, so newer GPUs run it too
"""
import glob
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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


def cuda_home():
    """The CUDA toolkit folder holding bin/nvcc, or None."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc on the PATH may be a wrapper script: ask nvcc where its toolkit is.
        try:
            out = subprocess.check_output([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o",
                                           os.devnull], text=True, stderr=subprocess.STDOUT)
            for line in out.splitlines():
                if "TOP=" in line:
                    return os.path.normpath(line.split("TOP=", 1)[1].strip())
        except (OSError, subprocess.CalledProcessError):
            pass
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


def cuda_extension():
    """mamba2c._cuda: the CUDA kernels (compiled by nvcc in BuildExt) and their binding, linked
    with the static CUDA runtime. cuBLAS is opened at run time (csrc/cuda/cublas.cu)."""
    mode = os.environ.get("MAMBA2C_CUDA", "auto")
    home = cuda_home() if mode != "0" else None
    if home is None:
        if mode == "1":
            raise RuntimeError("MAMBA2C_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return None
    libdirs = [d for d in (os.path.join(home, "lib64"), os.path.join(home, "lib"))
               if os.path.exists(os.path.join(d, "libcudart_static.a"))]
    if not libdirs:
        if mode == "1":
            raise RuntimeError(f"MAMBA2C_CUDA=1 but {home} has no libcudart_static.a")
        print(f"mamba2c: {home} has no libcudart_static.a; not building the CUDA backend")
        return None
    cflags = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-O3"]
    if os.environ.get("MAMBA2C_WERROR") == "1":
        cflags.append("-Werror")
    ext = Extension(
        "mamba2c._cuda",
        sources=sorted(glob.glob("csrc/python/cuda/*.c")) + ["csrc/model/status.c"],
        include_dirs=["csrc/include", os.path.join(home, "include")],
        extra_compile_args=cflags,
        extra_objects=[os.path.join(libdirs[0], "libcudart_static.a")],
        extra_link_args=["-ldl", "-lpthread", "-lrt", "-lstdc++"],
        depends=glob.glob("csrc/cuda/*") + glob.glob("csrc/model/*.h"),
    )
    ext.cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    ext.nvcc = os.path.join(home, "bin", "nvcc")
    return ext


def side_by_side(run, items):
    """[run(item) for item in items], up to one at a time a core: each item is a compiler
    process, so the sources of an extension compile at once instead of one after the other."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(run, items))


def compile_side_by_side(compile_sources):
    """A compiler's compile(sources, ...) calling the given one on each source side by side."""
    def compile_all(sources, *args, **kwargs):
        per_source = side_by_side(lambda source: compile_sources([source], *args, **kwargs),
                                  sources)
        return [obj for objects in per_source for obj in objects]
    return compile_all


class BuildExt(build_ext):
    """Compiles an extension's sources side by side, its .cu files with nvcc first, and links
    their objects in."""

    def build_extensions(self):
        self.compiler.compile = compile_side_by_side(self.compiler.compile)
        super().build_extensions()

    def build_extension(self, ext):
        sources = getattr(ext, "cuda_sources", None)
        if sources:
            ext.extra_objects = self.compile_cuda(ext, sources) + list(ext.extra_objects)
        super().build_extension(ext)

    def compile_cuda(self, ext, sources):
        archs = [a.strip() for a in os.environ.get("MAMBA2C_CUDA_ARCHS", "90").split(";")
                 if a.strip()]
        too_old = [a for a in archs if int(a) < 80]
        if too_old:
            raise SystemExit("MAMBA2C_CUDA_ARCHS: the CUDA backend needs compute capability 8.0 "
                             f"or newer (TF32 tensor cores, cp.async), not {';'.join(too_old)}")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{min(archs, key=int)},code=compute_"
                       f"{min(archs, key=int)}")
        flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                 "-Icsrc/include", "-Icsrc/cuda", "--expt-relaxed-constexpr"] + gencode
        if os.environ.get("MAMBA2C_WERROR") == "1":
            flags += ["-Werror", "all-warnings"]
        objects, commands = [], []
        for source in sources:
            obj = os.path.join(self.build_temp, os.path.splitext(source)[0] + ".o")
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            deps = [source] + ext.depends
            if self.force or not os.path.exists(obj) or any(
                    os.path.getmtime(d) > os.path.getmtime(obj) for d in deps):
                commands.append([ext.nvcc, *flags, "-c", source, "-o", obj])
                print(" ".join(commands[-1]))
            objects.append(obj)
        side_by_side(subprocess.check_call, commands)
        return objects


setup(ext_modules=[e for e in (extension(), cuda_extension()) if e is not None],
      cmdclass={"build_ext": BuildExt})
