# Data-parallel training over MPI (tests/mpi_test.sh): only in a build with -DMNEMO_MPI=ON
# (scripts/test.sh makes one, build-mpi, and runs this test there).
if(MNEMO_MPI)
  add_test(NAME mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi_test.sh $<TARGET_FILE:mnemo_cli>)
endif()
