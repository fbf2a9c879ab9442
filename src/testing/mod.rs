//! Test support compiled into the library: layouts built in code
//! (`testutil`) and the fuzz targets' entry points (`fuzzing`).

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod testutil;
