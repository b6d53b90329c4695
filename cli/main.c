#include <stdio.h>
#include "mnemo.h"
int main(void) { printf("mnemo %d\n", mnemo_version_num()); return 0; }
