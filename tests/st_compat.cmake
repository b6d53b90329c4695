# safetensors compatibility: files written by mnemo load in numpy / PyTorch (and the
# `safetensors` package when installed); files written by an independent Python writer load
# in mnemo. Uses the system Python, which has numpy and PyTorch (not the one first on PATH).
if(TARGET test_st)
  add_test(NAME st_compat
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/st_compat.py
                   $<TARGET_FILE:test_st> ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(st_compat PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=2")
endif()
