// Imported by web/test/types.test.mjs: the package resolved by its own name.
export * from "tandem-client";
