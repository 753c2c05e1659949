# Used by every notebook execution (IPYTHONDIR=$PWD/.ipython): TensorFlow writes C++ log
# lines to the process's stderr at import; ipykernel 7 would capture them into the notebook
# as stderr outputs, which nbval then reports and a -W build turns into warnings.
c = get_config()  # noqa: F821
c.IPKernelApp.capture_fd_output = False
