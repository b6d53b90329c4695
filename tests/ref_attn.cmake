# Every attention kind against its PyTorch function (tests/ref/attn_ref.py, float64, from the
# specification): ref_attn dumps the C layer (forward, auxiliary loss, backward in training
# mode), check_attn.py recomputes it. One line per kind (more for options that change the
# computation): "name|kind|options|extra ref_attn flags".
add_executable(ref_attn ${CMAKE_CURRENT_SOURCE_DIR}/ref_attn.c)
target_include_directories(ref_attn PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(ref_attn PRIVATE mnemo)
set(MNEMO_REF_ATTN_CASES
  "dense|dense||"
  "dense_norope|dense||--rope 0"
  "selective|selective|mem_eps=0.5,mem_tau=2|"
  "infini_linear|infini|segment=8,mem_update=linear|"
  "infini_delta_weighted|infini|segment=7,mem_update=delta,mem_repeat=8|"
  "infini_carry|infini|segment=8,mem_update=delta,mem_repeat=8,carry=true|--T 40"
  "window|window|w=9|"
  "block|block|b=7|"
  "block_prev|block|b=10,prev=true|"
  "strided|strided|l=6|--NH 4"
  "strided_fixed|strided|l=8,mode=fixed,c=3|--NH 4"
  "strided_one_head|strided|l=5|--NH 1"
  "longformer|longformer|w=5,dilation=2,g=3|"
  "longformer_layers|longformer|w=4/9,g=0|--layer 1"
  "bigbird|bigbird|block=4,wb=2,g=4,r=2,pattern_seed=7|"
  "bigbird_layer0|bigbird|block=5,wb=1,g=0,r=3,pattern_seed=2|--layer 0 --T 60"
)
foreach(c ${MNEMO_REF_ATTN_CASES})
  string(REPLACE "|" ";" f "${c}")
  list(GET f 0 name)
  list(GET f 1 kind)
  list(GET f 2 opts)
  list(GET f 3 extra)
  add_test(NAME ref_attn_${name}
           COMMAND bash -c "set -e; d=ref_attn_${name}; $<TARGET_FILE:ref_attn> --kind ${kind} --opts '${opts}' --out \$d ${extra}; /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ref/check_attn.py \$d")
  set_tests_properties(ref_attn_${name} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endforeach()
