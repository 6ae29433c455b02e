"""llama.cpp runtimes: the C++ llama-server (preferred) and llama-cpp-python's server."""
