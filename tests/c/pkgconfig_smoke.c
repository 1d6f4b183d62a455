/* Built with nothing but `pkg-config --cflags --libs etcdc`: the header and library it names
 * must be enough. Checks the runtime version against the header's. */
#include <stdio.h>
#include <string.h>

#include <etcdc.h>

int main(void) {
  etcdc_client *c = NULL;
  if (etcdc_client_connect("http://127.0.0.1:2379", NULL, &c) != ETCDC_OK) return 1;
  etcdc_client_free(c);
  printf("etcdc %s (header %s)\n", etcdc_version(), ETCDC_VERSION_STRING);
  return strcmp(etcdc_version(), ETCDC_VERSION_STRING) != 0;
}
