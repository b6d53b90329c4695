# The command-line tool, end to end and on bad input (tests/cli_test.sh).
add_test(NAME cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli_test.sh $<TARGET_FILE:mnemo_cli>)
