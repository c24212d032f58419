/* Loads each plugin path given with hosts/c/bext_locking_host.h and prints
 * "OK <name> <version>" or "ERR <message>" per line. Exit status 0 when all
 * loaded. Also checks that dlclose leaves a loaded plugin mapped
 * (-z nodelete) when asked with --dlclose-keeps-it. After
 * --allow-insecure, the paths that follow skip the permission rule. */

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

int main(int argc, char **argv) {
  int i, all = 1, dlclose_check = 0;
  unsigned flags = 0;
  char err[1024];
  for (i = 1; i < argc; i++) {
    BextLockingHostPlugin p;
    if (strcmp(argv[i], "--dlclose-keeps-it") == 0) {
      dlclose_check = 1;
      continue;
    }
    if (strcmp(argv[i], "--allow-insecure") == 0) {
      flags |= BEXT_LOCKING_HOST_ALLOW_INSECURE;
      continue;
    }
    if (bext_locking_host_load_opts(argv[i], flags, &p, err, sizeof err) != 0) {
      printf("ERR %s\n", err);
      all = 0;
      continue;
    }
    printf("OK %s %s\n", p.name, p.version);
    if (dlclose_check) {
      /* Our handle and the helper's: after closing both, a nodelete library
       * is still loaded, so RTLD_NOLOAD finds it. */
      void *again = dlopen(argv[i], RTLD_NOW | RTLD_NOLOAD);
      if (again != NULL) dlclose(again);
      dlclose(p.library);
      again = dlopen(argv[i], RTLD_NOW | RTLD_NOLOAD);
      printf("%s after dlclose\n", again != NULL ? "MAPPED" : "UNMAPPED");
      if (again == NULL) all = 0;
    }
  }
  return all ? 0 : 1;
}
