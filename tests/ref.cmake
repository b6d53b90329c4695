# End-to-end check against an independent PyTorch model (tests/ref/, run with Debian's
# /usr/bin/python3 which has torch): ref_dump writes a checkpoint and what mnemo computes,
# check_ref.py recomputes it in float64 and compares (docs/internals/reference-tests.md).
add_executable(ref_dump ${CMAKE_CURRENT_SOURCE_DIR}/ref_dump.c)
target_include_directories(ref_dump PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(ref_dump PRIVATE mnemo)
foreach(pos rope learned)
  add_test(NAME ref_model_${pos}
           COMMAND bash -c "set -e; d=ref_${pos}; $<TARGET_FILE:ref_dump> --out \$d --pos ${pos}; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_ref.py \$d")
  set_tests_properties(ref_model_${pos} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endforeach()
# The same with the Muon optimizer (the 10 training steps then check Muon against the reference's).
add_test(NAME ref_model_muon
         COMMAND bash -c "set -e; d=ref_muon; $<TARGET_FILE:ref_dump> --out \$d --optimizer muon; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_ref.py \$d")
set_tests_properties(ref_model_muon PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
# Selective Attention (the selection gradient flows into head 0's q and k; the reference builds
# the penalty as the paper's sketch does, with T x T tensors).
add_test(NAME ref_model_selective
         COMMAND bash -c "set -e; d=ref_selective; $<TARGET_FILE:ref_dump> --out \$d --attn selective; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_ref.py \$d")
set_tests_properties(ref_model_selective PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
# ... and with the memory loss (eps 0.5, tau 2): the gradients and the 10 steps are the objective's.
add_test(NAME ref_model_selective_mem
         COMMAND bash -c "set -e; d=ref_selective_mem; $<TARGET_FILE:ref_dump> --out \$d --attn selective --mem_eps 0.5; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_ref.py \$d")
set_tests_properties(ref_model_selective_mem PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
# Infini-attention, linear and delta rules: segments of 8 in windows of 32 (4 segments, so the
# gradients run through the memory three times) and the gates at their own learning rate.
foreach(rule linear delta)
  add_test(NAME ref_model_infini_${rule}
           COMMAND bash -c "set -e; d=ref_infini_${rule}; $<TARGET_FILE:ref_dump> --out \$d --attn infini --segment 8 --mem_update ${rule}; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_ref.py \$d")
  set_tests_properties(ref_model_infini_${rule} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endforeach()
