# The pass-key generator of experiments/passkey.py (format, lengths, depths, jitter).
add_test(NAME passkey_gen COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/passkey_gen.py)
