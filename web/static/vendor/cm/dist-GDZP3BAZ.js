import{a,b,c,d}from"./chunk-WQCI2QWW.js";import"./chunk-3H43PHPM.js";import"./chunk-SSBRMLCQ.js";export{d as css,b as cssCompletionSource,c as cssLanguage,a as defineCSSCompletionSource};
