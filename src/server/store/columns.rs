//! How the API's typed values sit in a column: ids as 64-bit integers, ports as integers
//! (read back only if they are ports), a run's state as vantage6's word for it.

use sqlx::any::{Any, AnyTypeInfo};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::api::{
    CollaborationId, ContainerPort, NodeId, OrganizationId, PublicPort, RunId, RunStatus, TaskId,
};

/// `$name($inner)` stored as a `$column`.
macro_rules! number_column {
    ($($name:ident($inner:ty) as $column:ty),* $(,)?) => {$(
        impl Type<Any> for $name {
            fn type_info() -> AnyTypeInfo {
                <$column as Type<Any>>::type_info()
            }
            fn compatible(ty: &AnyTypeInfo) -> bool {
                <$column as Type<Any>>::compatible(ty)
            }
        }

        impl Encode<'_, Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <$column as Encode<Any>>::encode(<$column>::from(self.0), buf)
            }
        }

        impl<'r> Decode<'r, Any> for $name {
            fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok($name(<$inner>::try_from(<$column as Decode<Any>>::decode(value)?)?))
            }
        }
    )*};
}

number_column!(
    RunId(i64) as i64,
    TaskId(i64) as i64,
    NodeId(i64) as i64,
    OrganizationId(i64) as i64,
    CollaborationId(i64) as i64,
    PublicPort(u16) as i32,
    ContainerPort(u16) as i32,
);

impl Type<Any> for RunStatus {
    fn type_info() -> AnyTypeInfo {
        <str as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <str as Type<Any>>::compatible(ty)
    }
}

impl Encode<'_, Any> for RunStatus {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Any>>::encode(self.as_str(), buf)
    }
}

impl<'r> Decode<'r, Any> for RunStatus {
    fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let name = <&str as Decode<Any>>::decode(value)?;
        RunStatus::named(name).ok_or_else(|| format!("no run state {name:?}").into())
    }
}
