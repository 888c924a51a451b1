#include "error.h"

const char *fedc_strerror(int err)
{
  switch (err) {
  case FEDC_OK:
    return "success";
#define FEDC_ERROR_MSG(name, value, msg) case name: return msg;
    FEDC_ERROR_TABLE(FEDC_ERROR_MSG)
#undef FEDC_ERROR_MSG
  }
  return "unknown error";
}

const char *fedc_errname(int err)
{
  switch (err) {
  case FEDC_OK:
    return "FEDC_OK";
#define FEDC_ERROR_NAME(name, value, msg) case name: return #name;
    FEDC_ERROR_TABLE(FEDC_ERROR_NAME)
#undef FEDC_ERROR_NAME
  }
  return "FEDC_EUNKNOWN";
}
