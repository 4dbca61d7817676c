import{a,b}from"./chunk-PE5CAUAH.js";import"./chunk-QCNLGKCZ.js";import"./chunk-XNZRITFD.js";export{a as conf,b as language};
